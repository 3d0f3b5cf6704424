"""The deployment files, read statically: Dockerfile, deploy/compose.yaml, deploy/k8s/.

Reads: the files under deploy/, the Dockerfile and .dockerignore, and the
settings streamapp and Faust document. Writes: nothing. No Docker engine,
cluster or server is needed; what is checked is what drifts unnoticed:

* every file parses, and every Kubernetes object has a kind and a name;
* every STREAMAPP_* variable named anywhere is a documented setting, and
  every variable given to a streamapp container is one that streamapp, Faust
  or botocore reads;
* production talks to real Kafka: kafka:// URLs, none of the embedded
  stack's settings (tansu://, BROKER_SESSION_TIMEOUT under 6 s);
* no secret is committed: credentials are references (``${VAR:?...}``,
  secretKeyRef), the templates hold placeholders only;
* containers run as non-root, workers never outnumber partitions, MinIO
  notifies the topic the workers read, from the input bucket only.
"""

from __future__ import annotations

import re
import shlex
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from faust.types.settings import Settings as FaustSettings

from streamapp.embedded.tansu import worker_environment
from streamapp.settings import Settings

ROOT = Path(__file__).resolve().parent.parent
DEPLOY = ROOT / "deploy"
K8S = DEPLOY / "k8s"
COMPOSE = DEPLOY / "compose.yaml"
ENV_EXAMPLE = DEPLOY / ".env.example"
DOCKERFILE = ROOT / "Dockerfile"

YAML_FILES = sorted([COMPOSE, *K8S.glob("*.yaml"), *K8S.glob("*.yml")])
#: every committed deployment file that is text: scanned for settings and secrets
TEXT_FILES = [*YAML_FILES, ENV_EXAMPLE, DEPLOY / "README.md", DOCKERFILE]

STREAMAPP_VARS = {name for name, _default, _doc in Settings.documentation()}
FAUST_VARS = {p.env_name for p in FaustSettings.SETTINGS.values() if p.env_name}
#: botocore's variables streamapp relies on (credentials, endpoint, region)
AWS_VARS = {
    "AWS_ACCESS_KEY_ID",
    "AWS_SECRET_ACCESS_KEY",
    "AWS_SESSION_TOKEN",
    "AWS_ENDPOINT_URL",
    "AWS_ENDPOINT_URL_S3",
    "AWS_REGION",
    "AWS_DEFAULT_REGION",
    "AWS_PROFILE",
}
#: read by the numeric libraries the predictor uses
RUNTIME_VARS = {"OPENBLAS_NUM_THREADS"}
SECRET_VARS = {"AWS_SECRET_ACCESS_KEY", "AWS_ACCESS_KEY_ID", "AWS_SESSION_TOKEN"}
#: the shortest session Kafka accepts (group.min.session.timeout.ms = 6 s)
MIN_SESSION_TIMEOUT = 6.0

_REFERENCE = re.compile(r"^\$\{[A-Z0-9_]+:\?[^}]+\}$")  # compose: ${VAR:?message}
_INTERPOLATION = re.compile(r"\$\{([A-Z0-9_]+)(?::?([-?])([^}]*))?\}")


def load_all(path: Path) -> list[Any]:
    with path.open(encoding="utf-8") as handle:
        return [doc for doc in yaml.safe_load_all(handle) if doc is not None]


def without_comments(text: str) -> str:
    """YAML / env-file text less its ``#`` comments (the files may explain what they avoid)."""
    return re.sub(r"(?m)(^|\s)#.*$", "", text)


def k8s_objects() -> Iterator[tuple[Path, dict[str, Any]]]:
    for path in sorted(K8S.glob("*.yaml")):
        for doc in load_all(path):
            yield path, doc


def objects_of(kind: str) -> list[dict[str, Any]]:
    return [doc for _path, doc in k8s_objects() if doc.get("kind") == kind]


def pod_spec(obj: dict[str, Any]) -> dict[str, Any] | None:
    """The pod spec of a workload (Deployment, Job ...) or of a KServe predictor."""
    if obj.get("kind") in ("Deployment", "StatefulSet", "DaemonSet", "Job"):
        return obj["spec"]["template"]["spec"]
    if obj.get("kind") == "InferenceService":
        return obj["spec"]["predictor"]
    return None


def compose() -> dict[str, Any]:
    return load_all(COMPOSE)[0]


def compose_default(value: Any) -> str:
    """A compose value with every ``${VAR:-default}`` replaced by its default."""
    return _INTERPOLATION.sub(lambda m: m.group(3) if m.group(2) == "-" else m.group(0), str(value))


def is_worker_command(command: Any) -> bool:
    words = command if isinstance(command, list) else shlex.split(str(command or ""))
    return words[:4] == ["faust", "-A", "streamapp", "worker"]


def is_streamapp_service(service: dict[str, Any]) -> bool:
    return "build" in service or str(service.get("image", "")).startswith(("streamapp", "${IMAGE"))


def compose_workers() -> dict[str, dict[str, Any]]:
    return {name: svc for name, svc in compose()["services"].items() if is_worker_command(svc.get("command"))}


def k8s_worker_deployment() -> dict[str, Any]:
    (worker,) = [
        d for d in [*objects_of("Deployment"), *objects_of("StatefulSet")]
        if any(is_worker_command(c.get("command")) for c in pod_spec(d)["containers"])
    ]
    return worker


def configmap() -> dict[str, str]:
    (config,) = [d for d in objects_of("ConfigMap") if d["metadata"]["name"] == "streamapp-config"]
    return config["data"]


# -- everything parses ----------------------------------------------------------------


@pytest.mark.parametrize("path", YAML_FILES, ids=lambda p: str(p.relative_to(ROOT)))
def test_yaml_parses(path: Path) -> None:
    assert load_all(path), f"{path} holds no document"


def test_k8s_objects_have_kind_and_name() -> None:
    for path, doc in k8s_objects():
        assert doc.get("apiVersion") and doc.get("kind"), path
        if doc["kind"] != "Kustomization":
            assert doc.get("metadata", {}).get("name"), f"{path}: {doc['kind']} without a name"


def test_kustomization_resources_exist_and_leave_templates_out() -> None:
    (kustomization,) = load_all(K8S / "kustomization.yaml")
    resources = kustomization["resources"]
    for resource in resources:
        assert (K8S / resource).is_file(), resource
    # applying a template would blank the real Secret; KafkaTopics belong in Kafka's namespace
    assert "secret.template.yaml" not in resources
    assert "kafka-topics.yaml" not in resources
    assert "predictor-kserve.yaml" not in resources or "predictor.yaml" not in resources


# -- settings: no drift from what streamapp and Faust read ------------------------------


def test_every_streamapp_variable_is_a_documented_setting() -> None:
    for path in TEXT_FILES:
        if not path.exists():
            continue
        used = set(re.findall(r"\bSTREAMAPP_[A-Z0-9_]+", path.read_text(encoding="utf-8")))
        unknown = used - STREAMAPP_VARS
        assert not unknown, f"{path.relative_to(ROOT)} names settings streamapp does not have: {sorted(unknown)}"


def _streamapp_env_compose() -> Iterator[tuple[str, str, Any]]:
    for name, service in compose()["services"].items():
        if is_streamapp_service(service):
            for key, value in (service.get("environment") or {}).items():
                yield name, key, value


def _worker_env_k8s() -> Iterator[tuple[str, str]]:
    for key in configmap():
        yield "streamapp-config", key
    for obj in [*objects_of("Deployment"), *objects_of("InferenceService")]:
        for container in pod_spec(obj)["containers"]:
            for entry in container.get("env", []):
                yield obj["metadata"]["name"], entry["name"]


def test_every_container_variable_is_read_by_streamapp_faust_or_botocore() -> None:
    known = STREAMAPP_VARS | FAUST_VARS | AWS_VARS | RUNTIME_VARS
    used = [(where, key) for where, key, _ in _streamapp_env_compose()] + list(_worker_env_k8s())
    unknown = sorted({f"{where}: {key}" for where, key in used if key not in known})
    assert not unknown, f"variables nothing reads: {unknown}"


def test_configmap_values_are_valid_settings() -> None:
    settings = Settings.from_env(configmap())  # converts types and validates
    assert settings.events_topic == configmap()["STREAMAPP_EVENTS_TOPIC"]
    for name in {name for name, _key, _value in _streamapp_env_compose()}:
        env = {k: compose_default(v) for k, v in compose()["services"][name]["environment"].items()}
        Settings.from_env({k: v for k, v in env.items() if k.startswith("STREAMAPP_")})


# -- production is real Kafka, not the embedded stack -----------------------------------


def test_no_embedded_broker_settings_in_production_files() -> None:
    embedded_only = set(worker_environment())  # the short timeouts of the embedded stack
    for path in [*YAML_FILES, ENV_EXAMPLE]:
        text = without_comments(path.read_text(encoding="utf-8"))
        assert "tansu://" not in text, path
        assert "TANSU_" not in text, path
        for match in re.finditer(r"BROKER_SESSION_TIMEOUT\W+([0-9.]+)", text):
            assert float(match.group(1)) >= MIN_SESSION_TIMEOUT, f"{path}: Kafka rejects sessions under 6 s"
        for variable in embedded_only - {"BROKER_SESSION_TIMEOUT", "BROKER_COMMIT_INTERVAL"}:
            assert variable not in text, f"{path}: {variable} is tuned for the embedded broker"


def test_broker_urls_are_kafka_urls() -> None:
    urls = [str(v) for _n, k, v in _streamapp_env_compose() if k == "BROKER_URL"] + [configmap()["BROKER_URL"]]
    assert urls
    for url in urls:
        assert url.startswith("kafka://"), url


# -- no secrets ---------------------------------------------------------------------------


def test_compose_credentials_are_required_references() -> None:
    secretish = re.compile(r"(PASSWORD|SECRET|ACCESS_KEY|ROOT_USER)")
    for name, service in compose()["services"].items():
        for key, value in (service.get("environment") or {}).items():
            if secretish.search(key):
                assert _REFERENCE.match(str(value)), f"{name}.{key} must be ${{VAR:?...}}, not a value"


def test_k8s_credentials_come_from_secrets() -> None:
    for key in configmap():
        assert key not in SECRET_VARS, f"{key} belongs in a Secret, not the ConfigMap"
    for _path, obj in k8s_objects():
        spec = pod_spec(obj)
        if spec is None:
            continue
        for container in spec["containers"]:
            for entry in container.get("env", []):
                if re.search(r"(PASSWORD|SECRET|ACCESS_KEY)", entry["name"]):
                    assert "value" not in entry, f"{obj['metadata']['name']}: {entry['name']} has a literal value"
                    assert "secretKeyRef" in entry["valueFrom"]


def test_secret_templates_hold_no_values() -> None:
    for secret in objects_of("Secret"):
        for key, value in {**secret.get("stringData", {}), **secret.get("data", {})}.items():
            assert not value, f"Secret {secret['metadata']['name']} commits a value for {key}"


def test_env_example_holds_placeholders_only() -> None:
    values = dict(
        line.split("=", 1) for line in ENV_EXAMPLE.read_text(encoding="utf-8").splitlines() if line and not line.startswith("#")
    )
    for key, value in values.items():
        if re.search(r"(PASSWORD|SECRET|ACCESS_KEY|USER)", key):
            assert value.startswith("change-me"), f"{key} in .env.example must be a change-me placeholder"
    # every variable compose needs is described in .env.example
    needed = {m.group(1) for m in _INTERPOLATION.finditer(COMPOSE.read_text(encoding="utf-8"))}
    assert needed <= set(values), f"missing from .env.example: {sorted(needed - set(values))}"
    assert ".env" in (DEPLOY / ".gitignore").read_text(encoding="utf-8").split()


def test_no_well_known_credentials_anywhere() -> None:
    leaked = re.compile(r"(AKIA[0-9A-Z]{16}|minioadmin|minio123|wJalrXUtnFEMI)")
    for path in TEXT_FILES:
        if path.exists():
            assert not leaked.search(path.read_text(encoding="utf-8")), path


# -- non-root -------------------------------------------------------------------------------


def test_k8s_pods_run_as_non_root_with_read_only_root() -> None:
    for _path, obj in k8s_objects():
        spec = pod_spec(obj)
        if spec is None:
            continue
        name = obj["metadata"]["name"]
        pod_ctx = spec.get("securityContext", {})
        for container in spec["containers"]:
            ctx = {**pod_ctx, **container.get("securityContext", {})}
            assert ctx.get("runAsNonRoot") is True, f"{name}/{container['name']}"
            assert ctx.get("runAsUser", 1) != 0, f"{name}/{container['name']}"
            assert ctx.get("allowPrivilegeEscalation") is False, f"{name}/{container['name']}"
            assert ctx.get("readOnlyRootFilesystem") is True, f"{name}/{container['name']}"
            assert ctx.get("capabilities", {}).get("drop") == ["ALL"], f"{name}/{container['name']}"


def test_compose_streamapp_services_do_not_run_as_root() -> None:
    services = {n: s for n, s in compose()["services"].items() if is_streamapp_service(s)}
    assert len(services) >= 3  # predictor and two workers
    for name, service in services.items():
        assert str(service.get("user", "10001")).split(":")[0] not in ("0", "root"), name
        assert service.get("read_only") is True, name


# -- scaling: workers <= partitions ---------------------------------------------------------


def test_k8s_workers_never_outnumber_partitions() -> None:
    partitions = int(configmap()["TOPIC_PARTITIONS"])
    topics = load_all(K8S / "kafka-topics.yaml")
    assert {t["spec"]["partitions"] for t in topics} == {partitions}, "every topic needs TOPIC_PARTITIONS partitions"
    names = {t["spec"].get("topicName", t["metadata"]["name"]) for t in topics}
    config = configmap()
    for key in ("STREAMAPP_EVENTS_TOPIC", "STREAMAPP_TENSORS_TOPIC", "STREAMAPP_LABELED_TOPIC",
                "STREAMAPP_ARCHIVED_TOPIC", "STREAMAPP_DEAD_LETTER_TOPIC"):
        assert config[key] in names, f"no KafkaTopic for {key}={config[key]}"
    app_id = config.get("STREAMAPP_APP_ID", Settings().app_id)
    for table in ("images", "dead-letters"):
        changelog = f"{app_id}-{table}-changelog"
        assert changelog in names
        (topic,) = [t for t in topics if t["metadata"]["name"] == changelog]
        assert topic["spec"]["config"]["cleanup.policy"] == "compact"
    worker = k8s_worker_deployment()
    assert 1 <= worker["spec"]["replicas"] <= partitions
    for hpa in objects_of("HorizontalPodAutoscaler"):
        if hpa["spec"]["scaleTargetRef"]["name"] == worker["metadata"]["name"]:
            assert hpa["spec"]["maxReplicas"] <= partitions


def test_compose_workers_keep_their_table_state_on_volumes_of_their_own() -> None:
    workers = compose_workers()
    datadirs = set()
    for name, worker in workers.items():
        datadir = worker["environment"]["APP_DATADIR"]
        (volume,) = [v.split(":")[0] for v in worker.get("volumes", []) if v.split(":")[1] == datadir]
        assert volume in compose()["volumes"], name
        datadirs.add(volume)
    assert len(datadirs) == len(workers)


def test_compose_workers_never_outnumber_partitions_and_share_a_group() -> None:
    services = compose()["services"]
    workers = compose_workers()
    assert len(workers) == 2
    partitions = {compose_default(w["environment"]["TOPIC_PARTITIONS"]) for w in workers.values()}
    (partitions_value,) = partitions
    assert len(workers) <= int(partitions_value)
    # kafka-init creates the topics with the same count
    assert compose_default(services["kafka-init"]["environment"]["PARTITIONS"]) == partitions_value
    # one consumer group: the same app id (default or set) on every worker
    assert len({w["environment"].get("STREAMAPP_APP_ID", "streamapp") for w in workers.values()}) == 1
    # different web ports, each published on its own host port
    ports = [w["environment"]["WEB_PORT"] for w in workers.values()]
    assert len(set(ports)) == len(ports)


def test_compose_kafka_init_creates_every_pipeline_topic() -> None:
    script = " ".join(compose()["services"]["kafka-init"]["command"])
    for worker in compose_workers().values():
        env = worker["environment"]
        settings = Settings.from_env({k: v for k, v in env.items() if k.startswith("STREAMAPP_")})
        for topic in (settings.events_topic, settings.tensors_topic, settings.labeled_topic,
                      settings.archived_topic, settings.dead_letter_topic):
            assert re.search(rf"\b{re.escape(topic)}\b", script), f"kafka-init does not create {topic}"


# -- MinIO notifications: the workers' topic, the input bucket only -----------------------------


def test_minio_notifies_the_workers_topic() -> None:
    services = compose()["services"]
    minio_env = services["minio"]["environment"]
    targets = {k.rsplit("_", 1)[1] for k in minio_env if k.startswith("MINIO_NOTIFY_KAFKA_ENABLE_")}
    assert targets, "MinIO has no Kafka notification target"
    for target in targets:
        assert minio_env[f"MINIO_NOTIFY_KAFKA_ENABLE_{target}"] == "on"
        assert minio_env[f"MINIO_NOTIFY_KAFKA_BROKERS_{target}"] == "kafka:9092"
        for worker in compose_workers().values():
            assert minio_env[f"MINIO_NOTIFY_KAFKA_TOPIC_{target}"] == worker["environment"]["STREAMAPP_EVENTS_TOPIC"]


def _event_add_buckets(script: str) -> set[str]:
    return {m.group(1).rsplit("/", 1)[-1].strip('"') for m in re.finditer(r"mc event add (?:--\S+ )*(\S+)", script)}


def test_only_the_input_bucket_sends_notifications() -> None:
    compose_script = " ".join(compose()["services"]["minio-init"]["command"])
    (job,) = objects_of("Job")
    (container,) = pod_spec(job)["containers"]
    job_env = {e["name"]: e.get("value") for e in container["env"]}
    job_script = " ".join(container["args"]).replace("$INPUT_BUCKET", job_env["INPUT_BUCKET"])
    archive_buckets = {configmap()["STREAMAPP_ARCHIVE_BUCKET"]}
    archive_buckets |= {w["environment"].get("STREAMAPP_ARCHIVE_BUCKET", "digits") for w in compose_workers().values()}
    for script in (compose_script, job_script):
        buckets = _event_add_buckets(script)
        assert buckets == {"images"}, buckets
        assert not buckets & archive_buckets
        assert re.search(r"mc event add .*--event put\b", script)


# -- images ------------------------------------------------------------------------------------


def test_third_party_images_are_pinned() -> None:
    images = [s["image"] for s in compose()["services"].values() if not is_streamapp_service(s)]
    for _path, obj in k8s_objects():
        spec = pod_spec(obj)
        if spec is not None:
            images += [c["image"] for c in spec["containers"] if not c["image"].startswith(("streamapp", "registry.example.com"))]
    assert images
    for image in images:
        name, _, tag = image.rpartition(":")
        assert name and tag and tag != "latest" and "/" not in tag, f"{image} is not pinned"


def test_worker_deployment_probes_and_shutdown() -> None:
    worker = k8s_worker_deployment()
    spec = pod_spec(worker)
    # long enough for Faust to finish in-flight work, commit and leave the group
    assert spec["terminationGracePeriodSeconds"] >= 60
    (container,) = spec["containers"]
    port = {p["name"]: p["containerPort"] for p in container["ports"]}
    assert port["web"] == 6066
    for probe in ("readinessProbe", "startupProbe"):
        assert container[probe]["httpGet"]["path"] == "/digits/"
    # liveness asks for this worker's own partitions only: a peer's trouble restarts nobody
    assert container["livenessProbe"]["httpGet"]["path"].startswith("/internal/counts/")
    for probe in ("readinessProbe", "livenessProbe", "startupProbe"):
        assert container[probe]["httpGet"]["port"] in ("web", 6066)
    mounts = {m["name"]: m["mountPath"] for m in container["volumeMounts"]}
    assert configmap()["APP_DATADIR"] in mounts.values(), "Faust's data dir must be writable (read-only root)"
    # the table state survives a restart: a volume claim per worker, not an emptyDir
    assert worker["kind"] == "StatefulSet"
    (data,) = [name for name, path in mounts.items() if path == configmap()["APP_DATADIR"]]
    assert data in {t["metadata"]["name"] for t in worker["spec"]["volumeClaimTemplates"]}
    assert container["resources"]["requests"] and container["resources"]["limits"]
    affinity = spec["affinity"]["podAntiAffinity"]["preferredDuringSchedulingIgnoredDuringExecution"]
    assert affinity


# -- Dockerfile ---------------------------------------------------------------------------------


def dockerfile_stages() -> list[list[tuple[str, str]]]:
    """(instruction, arguments) per stage; continuation lines joined, comments dropped."""
    text = re.sub(r"\\\n", " ", DOCKERFILE.read_text(encoding="utf-8"))
    stages: list[list[tuple[str, str]]] = []
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        instruction, _, args = line.partition(" ")
        instruction = instruction.upper()
        if instruction == "FROM":
            stages.append([])
        if stages:
            stages[-1].append((instruction, args.strip()))
    return stages


def test_dockerfile_is_multi_stage_and_runs_the_worker_as_non_root() -> None:
    stages = dockerfile_stages()
    assert len(stages) >= 2, "a builder stage and a runtime stage"
    final = stages[-1]
    users = [args for instruction, args in final if instruction == "USER"]
    assert users, "the final stage sets no USER"
    assert users[-1].split(":")[0] not in ("0", "root")
    commands = [args for instruction, args in final if instruction in ("CMD", "ENTRYPOINT")]
    assert any(is_worker_command(yaml.safe_load(args)) for args in commands if args.startswith("["))
    assert any(instruction == "EXPOSE" and "6066" in args.split() for instruction, args in final)
    assert any(instruction == "HEALTHCHECK" and "/digits/" in args for instruction, args in final)
    env = " ".join(args for instruction, args in final if instruction == "ENV")
    assert "PYTHONDONTWRITEBYTECODE=1" in env and "PYTHONUNBUFFERED=1" in env
    # nothing is compiled or installed with apt in the runtime image
    runs = " ".join(args for instruction, args in final if instruction == "RUN")
    for tool in ("gcc", "build-essential", "apt-get install", "pip install"):
        assert tool not in runs, f"the runtime stage runs {tool}"


def test_dockerignore_keeps_the_context_lean() -> None:
    rules = [r.strip() for r in (ROOT / ".dockerignore").read_text(encoding="utf-8").splitlines()]
    rules = [r for r in rules if r and not r.startswith("#")]
    # everything is excluded, then only what the wheel is built from comes back
    assert rules[0] == "*"
    included = {r[1:].rstrip("/") for r in rules if r.startswith("!")}
    assert {"setup.cfg", "pyproject.toml", "streamapp"} <= included
    assert not included & {".venv", ".git", ".data", ".cache", "tests", "deploy"}

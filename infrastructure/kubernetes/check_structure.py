#!/usr/bin/env python3
"""Structural checks of the manifests in this folder that the Kubernetes API schemas cannot make.

- The KEDA ScaledObject, which has no schema in kubernetes-validate: its fields against what KEDA
  2.x accepts, and its kafka trigger against the consumer Deployment it scales.
- References across files: the kustomization's resources and generator files, the ConfigMap and
  Secret keys the pods read, volume claims, service accounts, the Services' selectors and target
  ports, the image name.
- Workloads that run more than one pod at a time (replicas, or a rolling update's surge): no
  ReadWriteOnce claim shared by their pods, and `orchestrator serve` only on a PostgreSQL state
  (never a SQLite file), with each pod its own VELOSTREAM_HOST_NAME. No password in a state URL
  written in a manifest or config.env; the try logs (`--logs`) on a writable volume.

Usage: check_structure.py [DIR]   (default: this script's folder). Needs PyYAML (installed with
kubernetes-validate by `velostream-local install --for-tests`). Prints every problem found and
exits 1 if there is one.
"""

import pathlib
import re
import sys

import yaml

# KEDA 2.x ScaledObject spec fields (https://keda.sh/docs/2.17/reference/scaledobject-spec/).
SCALED_OBJECT_SPEC = {
    "scaleTargetRef", "pollingInterval", "cooldownPeriod", "initialCooldownPeriod",
    "idleReplicaCount", "minReplicaCount", "maxReplicaCount", "fallback", "advanced", "triggers",
}
SCALE_TARGET_REF = {"apiVersion", "kind", "name", "envSourceContainerName"}
ADVANCED = {"restoreToOriginalReplicaCount", "horizontalPodAutoscalerConfig", "scalingModifiers"}
HPA_CONFIG = {"name", "behavior"}
HPA_BEHAVIOR = {"scaleUp", "scaleDown"}
HPA_RULES = {"stabilizationWindowSeconds", "selectPolicy", "policies", "tolerance"}
TRIGGER = {"type", "name", "metadata", "authenticationRef", "metricType", "useCachedMetrics"}
# The kafka scaler's metadata (https://keda.sh/docs/2.17/scalers/apache-kafka/).
KAFKA_METADATA = {
    "bootstrapServers", "bootstrapServersFromEnv", "consumerGroup", "consumerGroupFromEnv",
    "topic", "topicFromEnv", "partitionLimitation", "lagThreshold", "activationLagThreshold",
    "offsetResetPolicy", "allowIdleConsumers", "excludePersistentLag", "scaleToZeroOnInvalidOffset",
    "limitToPartitionsWithLag", "ensureEvenDistributionOfPartitions", "version", "sasl", "tls",
    "unsafeSsl",
}
NUMERIC = re.compile(r"^[0-9]+$")
# postgres://USER:PASSWORD@... (a state URL with a password in it).
STATE_URL_PASSWORD = re.compile(r"^postgres(ql)?://[^/@:]*:[^/@]*@")
POSTGRES_URL = re.compile(r"^postgres(ql)?://")


class Checker:
    def __init__(self, root):
        self.root = root
        self.problems = []

    def problem(self, where, message):
        self.problems.append(f"{where}: {message}")

    def env_file(self, name):
        keys = {}
        path = self.root / name
        if not path.is_file():
            return None
        for n, line in enumerate(path.read_text().splitlines(), 1):
            line = line.strip()
            if not line or line.startswith("#"):
                continue
            if "=" not in line:
                self.problem(f"{name}:{n}", f"not KEY=VALUE: {line!r}")
                continue
            key, value = line.split("=", 1)
            keys[key] = value
        return keys

    def run(self):
        kustomization = yaml.safe_load((self.root / "kustomization.yaml").read_text())
        docs = []
        for res in kustomization.get("resources", []):
            path = self.root / res
            if not path.is_file():
                self.problem("kustomization.yaml", f"resource {res} does not exist")
                continue
            for doc in yaml.safe_load_all(path.read_text()):
                if doc is not None:
                    docs.append((res, doc))

        # Generators: ConfigMaps from env files or files, Secrets from secrets.env (written from
        # its .example, which carries the keys).
        config_keys = {}
        for gen in kustomization.get("configMapGenerator", []):
            keys = set()
            for env in gen.get("envs", []):
                parsed = self.env_file(env)
                if parsed is None:
                    self.problem("kustomization.yaml", f"configMapGenerator {gen['name']}: {env} does not exist")
                else:
                    keys |= parsed.keys()
            for f in gen.get("files", []):
                if not (self.root / f).is_file():
                    self.problem("kustomization.yaml", f"configMapGenerator {gen['name']}: {f} does not exist")
                keys.add(pathlib.Path(f).name)
            config_keys[gen["name"]] = keys
        secret_keys = {}
        # The templates' example values, by (Secret, key): what kind of value a key holds.
        self.secret_examples = {}
        for gen in kustomization.get("secretGenerator", []):
            keys = set()
            for env in gen.get("envs", []):
                parsed = self.env_file(env + ".example")
                if parsed is None:
                    self.problem("kustomization.yaml", f"secretGenerator {gen['name']}: {env}.example (its template) does not exist")
                else:
                    keys |= parsed.keys()
                    for k, v in parsed.items():
                        self.secret_examples[(gen["name"], k)] = v
            secret_keys[gen["name"]] = keys
        self.config_values = {}
        for gen in kustomization.get("configMapGenerator", []):
            for env in gen.get("envs", []):
                for k, v in (self.env_file(env) or {}).items():
                    self.config_values[(gen["name"], k)] = v
                    if k == "VELOSTREAM_STATE" and STATE_URL_PASSWORD.match(v):
                        self.problem(env, f"{k} holds a password: a state URL with one goes into the Secret (secrets.env)")
        gitignore = (self.root / ".gitignore").read_text().split() if (self.root / ".gitignore").is_file() else []
        for gen in kustomization.get("secretGenerator", []):
            for env in gen.get("envs", []):
                if env not in gitignore:
                    self.problem(".gitignore", f"{env} (secrets) is not ignored")
        images = {i["name"] for i in kustomization.get("images", [])}

        by_kind = {}
        for res, doc in docs:
            by_kind.setdefault(doc.get("kind"), []).append((res, doc))
        names = lambda kind: {d["metadata"]["name"] for _, d in by_kind.get(kind, [])}

        workloads = []
        for kind in ("Deployment", "Job"):
            for res, doc in by_kind.get(kind, []):
                workloads.append((res, doc, doc["spec"]["template"]))
        for res, doc, template in workloads:
            self.pod(res, template, config_keys, secret_keys, images, names)
        claims = {d["metadata"]["name"]: d for _, d in by_kind.get("PersistentVolumeClaim", [])}
        for res, doc in by_kind.get("Deployment", []):
            self.several_pods(res, doc, claims)

        for res, svc in by_kind.get("Service", []):
            selector = svc["spec"].get("selector", {})
            matches = [t for _, _, t in workloads
                       if selector.items() <= t["metadata"].get("labels", {}).items()]
            if not matches:
                self.problem(res, f"Service {svc['metadata']['name']} selects no pod template ({selector})")
            for port in svc["spec"].get("ports", []):
                target = port.get("targetPort")
                if isinstance(target, str) and not any(
                    target in {p.get("name") for c in t["spec"]["containers"] for p in c.get("ports", [])}
                    for t in matches
                ):
                    self.problem(res, f"Service {svc['metadata']['name']}: targetPort {target} is no container port of the pods it selects")

        for res, so in by_kind.get("ScaledObject", []):
            self.scaled_object(res, so, by_kind, config_keys)
        if not by_kind.get("ScaledObject"):
            self.problem("kustomization.yaml", "no ScaledObject among the resources")
        return self.problems

    def pod(self, res, template, config_keys, secret_keys, images, names):
        spec = template["spec"]
        sa = spec.get("serviceAccountName")
        if sa and sa not in names("ServiceAccount"):
            self.problem(res, f"serviceAccountName {sa} is not defined")
        for vol in spec.get("volumes", []):
            claim = vol.get("persistentVolumeClaim", {}).get("claimName")
            if claim and claim not in names("PersistentVolumeClaim"):
                self.problem(res, f"volume {vol['name']}: claim {claim} is not defined")
            cm = vol.get("configMap", {}).get("name")
            if cm and cm not in config_keys:
                self.problem(res, f"volume {vol['name']}: ConfigMap {cm} is not generated")
        volumes = {v["name"] for v in spec.get("volumes", [])}
        for c in spec.get("initContainers", []) + spec["containers"]:
            where = f"{res} container {c['name']}"
            if c.get("image", "").split(":")[0] not in images:
                self.problem(where, f"image {c.get('image')} is not one of the kustomization's images {sorted(images)}")
            for ef in c.get("envFrom", []):
                ref = ef.get("configMapRef", {}).get("name") or ef.get("secretRef", {}).get("name")
                if ref not in config_keys and ref not in secret_keys:
                    self.problem(where, f"envFrom {ref} is not generated")
            for env in c.get("env", []):
                src = env.get("valueFrom", {})
                for kind, known in (("secretKeyRef", secret_keys), ("configMapKeyRef", config_keys)):
                    ref = src.get(kind)
                    if ref and ref.get("key") not in known.get(ref.get("name"), set()):
                        self.problem(where, f"env {env['name']}: {kind} {ref.get('name')}/{ref.get('key')} does not exist")
            for m in c.get("volumeMounts", []):
                if m["name"] not in volumes:
                    self.problem(where, f"volumeMount {m['name']} has no volume")
            ports = {p.get("name") for p in c.get("ports", [])}
            for probe in ("readinessProbe", "livenessProbe", "startupProbe"):
                p = c.get(probe, {})
                port = (p.get("httpGet") or p.get("tcpSocket") or {}).get("port")
                if isinstance(port, str) and port not in ports:
                    self.problem(where, f"{probe} uses port {port}, which the container does not name")

    def several_pods(self, res, deployment, claims):
        """A Deployment whose pods may run two at a time: more than one replica, or a rolling
        update (the default), which starts a new pod before the old one has stopped unless
        maxSurge is 0."""
        spec = deployment["spec"]
        replicas = spec.get("replicas", 1)
        strategy = spec.get("strategy") or {}
        rolling = strategy.get("type", "RollingUpdate") == "RollingUpdate"
        surge = (strategy.get("rollingUpdate") or {}).get("maxSurge", "25%")
        overlap = replicas > 1 or (rolling and surge not in (0, "0", "0%"))
        why = f"{replicas} replicas" if replicas > 1 else "a rolling update starts the new pod before the old one stops"
        pod = spec["template"]["spec"]
        for vol in pod.get("volumes", []):
            claim = vol.get("persistentVolumeClaim", {}).get("claimName")
            modes = set(claims.get(claim, {}).get("spec", {}).get("accessModes", []))
            if claim in claims and overlap and "ReadWriteMany" not in modes and "ReadOnlyMany" not in modes:
                self.problem(res, f"volume {vol['name']}: claim {claim} is {', '.join(sorted(modes)) or 'without accessModes'}, but pods may run together ({why}): they need ReadWriteMany")
        for c in pod["containers"]:
            args = [str(a) for a in c.get("args", [])]
            if c.get("command", [None])[0] != "orchestrator" or "serve" not in args:
                continue
            where = f"{res} container {c['name']}"
            env = {e["name"]: e for e in c.get("env", [])}
            state = None
            if "--state" in args[:-1]:
                state = args[args.index("--state") + 1]
                if STATE_URL_PASSWORD.match(state):
                    self.problem(where, "--state carries a password: take the URL from the Secret (env VELOSTREAM_STATE, secretKeyRef)")
            elif "VELOSTREAM_STATE" in env:
                e = env["VELOSTREAM_STATE"]
                ref = (e.get("valueFrom") or {}).get("secretKeyRef") or (e.get("valueFrom") or {}).get("configMapKeyRef")
                if ref:
                    state = self.secret_examples.get((ref.get("name"), ref.get("key"))) \
                        or self.config_values.get((ref.get("name"), ref.get("key")))
                else:
                    state = e.get("value")
                    if state and STATE_URL_PASSWORD.match(state):
                        self.problem(where, "env VELOSTREAM_STATE carries a password: take it from the Secret (secretKeyRef)")
            else:
                for ef in c.get("envFrom", []):
                    name = (ef.get("configMapRef") or ef.get("secretRef") or {}).get("name")
                    state = state or self.config_values.get((name, "VELOSTREAM_STATE")) \
                        or self.secret_examples.get((name, "VELOSTREAM_STATE"))
            if overlap and not (state and POSTGRES_URL.match(state)):
                self.problem(where, f"orchestrator serve runs in several pods at once ({why}) on {'the SQLite file ' + state if state else 'the default SQLite file'}: several servers share a PostgreSQL state only (--state / VELOSTREAM_STATE postgres://...)")
            if overlap:
                host = ((env.get("VELOSTREAM_HOST_NAME") or {}).get("valueFrom") or {}).get("fieldRef", {}).get("fieldPath")
                if host != "metadata.name":
                    self.problem(where, "VELOSTREAM_HOST_NAME must be the pod's name (valueFrom.fieldRef.fieldPath: metadata.name), so each pod is its own owner in the state")
            if "--logs" in args[:-1]:
                logs = args[args.index("--logs") + 1]
                writable = [m for m in c.get("volumeMounts", [])
                            if not m.get("readOnly") and (logs + "/").startswith(m["mountPath"].rstrip("/") + "/")]
                if not writable and (c.get("securityContext") or {}).get("readOnlyRootFilesystem"):
                    self.problem(where, f"--logs {logs} is on the read-only root filesystem: mount a volume there")

    def container_env(self, deployment, config_keys, container_name=None):
        containers = deployment["spec"]["template"]["spec"]["containers"]
        c = next((c for c in containers if container_name in (None, c["name"])), containers[0])
        env = {e["name"] for e in c.get("env", [])}
        for ef in c.get("envFrom", []):
            env |= config_keys.get(ef.get("configMapRef", {}).get("name"), set())
        return env

    def scaled_object(self, res, so, by_kind, config_keys):
        if so.get("apiVersion") != "keda.sh/v1alpha1":
            self.problem(res, f"apiVersion {so.get('apiVersion')}: KEDA's ScaledObject is keda.sh/v1alpha1")
        if not so.get("metadata", {}).get("name"):
            self.problem(res, "metadata.name is missing")
        spec = so.get("spec") or {}
        self.only(res, "spec", spec, SCALED_OBJECT_SPEC)
        ref = spec.get("scaleTargetRef") or {}
        self.only(res, "spec.scaleTargetRef", ref, SCALE_TARGET_REF)
        kind = ref.get("kind", "Deployment")
        target = next((d for _, d in by_kind.get(kind, []) if d["metadata"]["name"] == ref.get("name")), None)
        if target is None:
            self.problem(res, f"scaleTargetRef {kind}/{ref.get('name')} is not among the resources")
        if ref.get("apiVersion", "apps/v1") != "apps/v1" and kind == "Deployment":
            self.problem(res, "scaleTargetRef.apiVersion of a Deployment is apps/v1")
        for field in ("pollingInterval", "cooldownPeriod", "minReplicaCount", "maxReplicaCount"):
            if field in spec and (not isinstance(spec[field], int) or spec[field] < 0):
                self.problem(res, f"spec.{field} must be a non-negative integer, not {spec[field]!r}")
        lo, hi = spec.get("minReplicaCount", 0), spec.get("maxReplicaCount", 100)
        if isinstance(lo, int) and isinstance(hi, int) and lo > hi:
            self.problem(res, f"minReplicaCount {lo} > maxReplicaCount {hi}")
        partitions = self.env_file("config.env") or {}
        if "VELOSTREAM_PARTITIONS" in partitions and isinstance(hi, int) and hi > int(partitions["VELOSTREAM_PARTITIONS"]):
            self.problem(res, f"maxReplicaCount {hi} is more than the topic's {partitions['VELOSTREAM_PARTITIONS']} partitions: the extra consumers would own nothing")
        advanced = spec.get("advanced") or {}
        self.only(res, "spec.advanced", advanced, ADVANCED)
        hpa = advanced.get("horizontalPodAutoscalerConfig") or {}
        self.only(res, "spec.advanced.horizontalPodAutoscalerConfig", hpa, HPA_CONFIG)
        behavior = hpa.get("behavior") or {}
        self.only(res, "behavior", behavior, HPA_BEHAVIOR)
        for name, rules in behavior.items():
            self.only(res, f"behavior.{name}", rules or {}, HPA_RULES)
        triggers = spec.get("triggers")
        if not isinstance(triggers, list) or not triggers:
            self.problem(res, "spec.triggers must be a non-empty list")
            return
        env = self.container_env(target, config_keys, ref.get("envSourceContainerName")) if target else set()
        for i, t in enumerate(triggers):
            where = f"{res} spec.triggers[{i}]"
            self.only(where, "trigger", t, TRIGGER)
            if t.get("type") != "kafka":
                self.problem(where, f"type {t.get('type')}: expected the kafka trigger")
                continue
            meta = t.get("metadata") or {}
            self.only(where, "metadata", meta, KAFKA_METADATA)
            for k, v in meta.items():
                if not isinstance(v, str):
                    self.problem(where, f"metadata.{k} = {v!r}: KEDA trigger metadata values are strings (quote them)")
            for field in ("bootstrapServers", "consumerGroup"):
                if field not in meta and field + "FromEnv" not in meta:
                    self.problem(where, f"metadata needs {field} or {field}FromEnv")
            for k, v in meta.items():
                if k.endswith("FromEnv") and v not in env:
                    self.problem(where, f"metadata.{k} = {v}: the scale target's container has no such variable")
            for field in ("lagThreshold", "activationLagThreshold"):
                if field in meta and not NUMERIC.match(str(meta[field])):
                    self.problem(where, f"metadata.{field} = {meta[field]!r} is not a whole number")
            if meta.get("offsetResetPolicy", "latest") not in ("earliest", "latest"):
                self.problem(where, "metadata.offsetResetPolicy is earliest or latest")
            for field in ("allowIdleConsumers", "excludePersistentLag", "scaleToZeroOnInvalidOffset",
                          "limitToPartitionsWithLag", "ensureEvenDistributionOfPartitions"):
                if field in meta and meta[field] not in ("true", "false"):
                    self.problem(where, f"metadata.{field} is \"true\" or \"false\"")

    def only(self, res, what, mapping, allowed):
        if not isinstance(mapping, dict):
            self.problem(res, f"{what} must be a mapping")
            return
        for key in mapping:
            if key not in allowed:
                self.problem(res, f"{what}.{key} is not a field KEDA knows (known: {', '.join(sorted(allowed))})")


def main():
    root = pathlib.Path(sys.argv[1] if len(sys.argv) > 1 else pathlib.Path(__file__).parent)
    problems = Checker(root).run()
    for p in problems:
        print(p)
    if problems:
        print(f"{len(problems)} problem(s) in {root}")
        return 1
    print(f"{root}: the ScaledObject and the references between the manifests are sound")
    return 0


if __name__ == "__main__":
    sys.exit(main())

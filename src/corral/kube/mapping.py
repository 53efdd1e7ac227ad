"""Pod -> container group: what a pod bound to the virtual node becomes in Corral.

``references`` says which ConfigMaps, Secrets and service-account tokens a pod needs; the pod
controller fetches them into ``PodInputs``; ``pod_to_group`` is then a pure function of the pod and
its inputs, so it can be tested on the client library's models without a cluster. Everything a pod
asks for that Corral cannot honour becomes a ``Warning`` (an event on the pod), never a silent drop.
"""

from __future__ import annotations

import base64
import hashlib
import json
import re
from dataclasses import dataclass, field
from decimal import ROUND_CEILING, Decimal
from typing import Any

from lightkube.models.core_v1 import (
    Container,
    ContainerPort,
    EnvVar,
    ObjectFieldSelector,
    Pod,
    Probe,
    ResourceFieldSelector,
    SecurityContext,
    Volume,
)
from lightkube.utils.quantity import parse_quantity
from pydantic import ValidationError

from corral.model.sysctl import MAX_SYSCTLS, Sysctl

GIB = Decimal(1 << 30)
TAG_NODE, TAG_NAMESPACE, TAG_POD, TAG_UID = "k8s-node", "k8s-namespace", "k8s-pod", "k8s-uid"
_NAME_BAD = re.compile(r"[^a-z0-9-]+")

# Volume kinds that have no Corral counterpart: an empty directory stands in, with a warning.
UNSUPPORTED_VOLUMES = (
    "hostPath", "persistentVolumeClaim", "nfs", "csi", "ephemeral", "iscsi", "rbd", "cephfs", "cinder", "fc",
    "flexVolume", "flocker", "gcePersistentDisk", "awsElasticBlockStore", "azureDisk", "azureFile", "glusterfs",
    "photonPersistentDisk", "portworxVolume", "quobyte", "scaleIO", "storageos", "vsphereVolume", "image",
    "gitRepo",
)


@dataclass
class MappingSettings:
    node_name: str
    location: str = "local"
    cluster_dns: list[str] = field(default_factory=list)  # the cluster DNS service address(es), when configured
    cluster_domain: str = "cluster.local"
    corral_search: str | None = None  # Corral's search domain, so pods also resolve Corral group names
    default_cpu: float = 0.25  # cores for a container that requests none (BestEffort)
    default_memory_gb: float = 0.5
    gpu_sku: str = "K80"
    subnet_id: str | None = None  # a Corral subnet pods join (None: Corral's default network)


@dataclass(frozen=True)
class TokenKey:
    service_account: str
    audience: str  # "" means the API server's own audience
    expiration: int


@dataclass
class Refs:
    config_maps: set[str] = field(default_factory=set)
    secrets: set[str] = field(default_factory=set)
    tokens: set[TokenKey] = field(default_factory=set)


@dataclass
class PodInputs:
    """What the pod refers to, as fetched from the API server (None: it does not exist)."""

    config_maps: dict[str, dict[str, bytes] | None] = field(default_factory=dict)
    secrets: dict[str, dict[str, bytes] | None] = field(default_factory=dict)
    tokens: dict[TokenKey, str] = field(default_factory=dict)


@dataclass
class PodWarning:
    """What the pod asked for that Corral cannot honour: a Warning event on the pod."""

    reason: str
    message: str


@dataclass
class GroupPlan:
    name: str
    body: dict[str, Any]
    warnings: list[PodWarning]

    def digest(self) -> str:
        return hashlib.sha256(json.dumps(self.body, sort_keys=True).encode()).hexdigest()[:16]


class MissingReference(Exception):
    """A ConfigMap, Secret or key the pod needs does not exist (yet): the pod waits, as kubelet's
    CreateContainerConfigError."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


def group_name(namespace: str, name: str) -> str:
    """A valid, stable Corral group name for a pod (a hash suffix when the readable form is cut or changed)."""
    raw = f"{namespace}-{name}"
    clean = _NAME_BAD.sub("-", raw.lower()).strip("-")
    if clean == raw and len(clean) <= 63:
        return clean
    digest = hashlib.sha256(raw.encode()).hexdigest()[:8]
    return f"{clean[:54].strip('-')}-{digest}"


def all_containers(pod: Pod) -> list[Container]:
    spec = pod.spec
    assert spec is not None
    return [*(spec.initContainers or []), *spec.containers]


def references(pod: Pod) -> Refs:
    refs = Refs()
    spec = pod.spec
    assert spec is not None
    for c in all_containers(pod):
        for e in c.env or []:
            src = e.valueFrom
            if src is not None and src.configMapKeyRef is not None:
                refs.config_maps.add(src.configMapKeyRef.name or "")
            if src is not None and src.secretKeyRef is not None:
                refs.secrets.add(src.secretKeyRef.name or "")
        for ef in c.envFrom or []:
            if ef.configMapRef is not None:
                refs.config_maps.add(ef.configMapRef.name or "")
            if ef.secretRef is not None:
                refs.secrets.add(ef.secretRef.name or "")
    for v in spec.volumes or []:
        if v.configMap is not None:
            refs.config_maps.add(v.configMap.name or "")
        if v.secret is not None:
            refs.secrets.add(v.secret.secretName or "")
        for src in (v.projected.sources or []) if v.projected else []:
            if src.configMap is not None:
                refs.config_maps.add(src.configMap.name or "")
            if src.secret is not None:
                refs.secrets.add(src.secret.name or "")
            if src.serviceAccountToken is not None:
                refs.tokens.add(token_key(pod, src.serviceAccountToken.audience,
                                          src.serviceAccountToken.expirationSeconds))
    for ps in spec.imagePullSecrets or []:
        if ps.name:
            refs.secrets.add(ps.name)
    return refs


def token_key(pod: Pod, audience: str | None, expiration: int | None) -> TokenKey:
    sa = (pod.spec.serviceAccountName if pod.spec else None) or "default"
    return TokenKey(sa, audience or "", expiration or 3600)


# ---------------------------------------------------------------------------------------------------------------
def pod_to_group(pod: Pod, inputs: PodInputs, settings: MappingSettings) -> GroupPlan:
    return _Mapper(pod, inputs, settings).group()


class _Mapper:
    def __init__(self, pod: Pod, inputs: PodInputs, settings: MappingSettings) -> None:
        assert pod.metadata is not None and pod.spec is not None
        self.pod, self.meta, self.spec = pod, pod.metadata, pod.spec
        self.inputs, self.settings = inputs, settings
        self.warnings: list[PodWarning] = []
        self.ns = self.meta.namespace or "default"

    def warn(self, reason: str, message: str) -> None:
        if not any(w.message == message for w in self.warnings):
            self.warnings.append(PodWarning(reason, message))

    # the group --------------------------------------------------------------------------------------------------
    def group(self) -> GroupPlan:
        spec = self.spec
        self._pod_level_warnings()
        containers = []
        init_containers = []
        for c in spec.initContainers or []:
            if c.restartPolicy == "Always":  # a sidecar (Kubernetes 1.28+): it runs beside the app containers
                self.warn("SidecarStartOrder", f"init container {c.name} (restartPolicy Always) runs as a regular "
                          "container of the group: it starts together with the app containers, not before them")
                containers.append(self._container(c))
            else:
                init_containers.append(self._init_container(c))
        containers += [self._container(c) for c in spec.containers]
        self._fit_limits(containers)
        props: dict[str, Any] = {
            "containers": containers,
            "osType": "Linux",
            "restartPolicy": spec.restartPolicy or "Always",
        }
        if init_containers:
            props["initContainers"] = init_containers
        volumes = self._volumes()
        if volumes:
            props["volumes"] = volumes
        creds = self._registry_credentials()
        if creds:
            props["imageRegistryCredentials"] = creds
        dns = self._dns()
        if dns is not None:
            props["dnsConfig"] = dns
        sysctls = self._sysctls()
        if sysctls:
            props["sysctls"] = sysctls
        if spec.hostAliases:
            props["hostAliases"] = [{"ip": a.ip, "hostnames": list(a.hostnames or [])} for a in spec.hostAliases
                                    if a.hostnames]
        if self.settings.subnet_id:
            props["subnetIds"] = [{"id": self.settings.subnet_id}]
        tags = {TAG_NODE: self.settings.node_name, TAG_NAMESPACE: self.ns, TAG_POD: self.meta.name or "",
                TAG_UID: self.meta.uid or ""}
        body = {"location": self.settings.location, "tags": tags, "properties": props}
        return GroupPlan(group_name(self.ns, self.meta.name or ""), body, self.warnings)

    def _pod_level_warnings(self) -> None:
        spec = self.spec
        for flag in ("hostNetwork", "hostPID", "hostIPC"):
            if getattr(spec, flag):
                self.warn("UnsupportedField", f"spec.{flag} is not supported on Corral: the pod gets its own "
                          "namespaces")
        if spec.shareProcessNamespace:
            self.warn("UnsupportedField", "spec.shareProcessNamespace is not supported on Corral: each container "
                      "has its own process namespace")
        if spec.os and spec.os.name and spec.os.name != "linux":
            self.warn("UnsupportedField", f"spec.os.name {spec.os.name} is not supported: Corral runs Linux")
        if spec.ephemeralContainers:
            self.warn("UnsupportedField", "ephemeral containers (kubectl debug) are not supported on Corral")
        if spec.readinessGates:
            self.warn("UnsupportedField", "spec.readinessGates are not evaluated by the Corral node: Ready "
                      "follows the containers' readiness only")
        if spec.resources is not None:
            self.warn("UnsupportedField", "pod-level spec.resources are not supported; the containers' own "
                      "resources are used")
        if spec.runtimeClassName:
            self.warn("UnsupportedField", f"runtimeClassName {spec.runtimeClassName} is ignored: Corral picks "
                      "the runtime from its isolation setting")
        psc = spec.securityContext
        if psc is not None:
            if psc.supplementalGroupsPolicy == "Strict":
                self.warn("UnsupportedField", "securityContext.supplementalGroupsPolicy Strict is not supported: "
                          "the groups of the image's /etc/group for the user are added too")
            if psc.seLinuxOptions or psc.appArmorProfile or psc.windowsOptions:
                self.warn("UnsupportedField", "securityContext seLinuxOptions, appArmorProfile and windowsOptions "
                          "are not supported on Corral")
        if spec.subdomain or spec.setHostnameAsFQDN or spec.hostname:
            self.warn("UnsupportedField", "spec.hostname, subdomain and setHostnameAsFQDN are not supported: the "
                      "group's host name is its Corral name")

    def _sysctls(self) -> list[dict[str, str]]:
        """The pod's sysctls that a Corral group sets (namespaced net.* ones, as ``corral.model.sysctl`` accepts);
        any other (kernel.*, fs.*, one Corral refuses) is a warning and left out, so the pod still runs."""
        psc = self.spec.securityContext
        out: dict[str, dict[str, str]] = {}
        for s in (psc.sysctls if psc else None) or []:
            # Kubernetes also takes "/" as the separator, with "." then inside a component (an interface name).
            name = s.name.translate(str.maketrans("./", "/.")) if "/" in s.name else s.name
            try:
                ok = Sysctl(name=name, value=s.value)
            except ValidationError as exc:
                why = str(exc.errors()[0]["msg"]).removeprefix("Value error, ")
                self.warn("UnsupportedField", f"securityContext.sysctls {s.name}={s.value} is not set: {why}")
                continue
            if name not in out and len(out) >= MAX_SYSCTLS:
                self.warn("UnsupportedField", f"securityContext.sysctls {s.name} is not set: a Corral group takes "
                          f"at most {MAX_SYSCTLS}")
                continue
            out[name] = {"name": ok.name, "value": ok.value}
        return list(out.values())

    # containers -------------------------------------------------------------------------------------------------
    def _base(self, c: Container) -> dict[str, Any]:
        out: dict[str, Any] = {"image": c.image or ""}
        env = self._env(c)
        values = {e["name"]: e.get("value", e.get("secureValue")) for e in env if "groupField" not in e}
        if c.command:
            out["command"] = [_expand(a, values) for a in c.command]
        if c.args is not None and (c.args or c.command):
            out["args"] = [_expand(a, values) for a in c.args]
        if env:
            out["environmentVariables"] = env
        mounts = self._mounts(c)
        if mounts:
            out["volumeMounts"] = mounts
        sc = self._security(c)
        if sc:
            out["securityContext"] = sc
        if c.workingDir:
            out["workingDir"] = c.workingDir
        if c.lifecycle is not None and (c.lifecycle.postStart or c.lifecycle.preStop):
            self.warn("UnsupportedField", f"container {c.name}: lifecycle hooks (postStart, preStop) are not "
                      "run on Corral")
        if c.stdin or c.tty:
            self.warn("UnsupportedField", f"container {c.name}: stdin and tty are not supported (containers run "
                      "without a stdin pipe); kubectl exec -it works, attach is output only")
        if c.volumeDevices:
            self.warn("UnsupportedField", f"container {c.name}: volumeDevices are not supported on Corral")
        return out

    def _init_container(self, c: Container) -> dict[str, Any]:
        props = self._base(c)
        if c.resources is not None and (c.resources.requests or c.resources.limits):
            self.warn("UnsupportedField", f"init container {c.name}: resources are not applied (Corral runs init "
                      "containers within the group's own resources)")
        for kind in ("livenessProbe", "readinessProbe", "startupProbe"):
            if getattr(c, kind) is not None and c.restartPolicy != "Always":
                self.warn("UnsupportedField", f"init container {c.name}: {kind} is not run on init containers")
        return {"name": c.name, "properties": props}  # Kubernetes container names are DNS labels, as Corral's

    def _container(self, c: Container) -> dict[str, Any]:
        props = self._base(c)
        props["resources"] = self._resources(c)
        ports = self._ports(c)
        if ports:
            props["ports"] = ports
        for kind in ("livenessProbe", "readinessProbe", "startupProbe"):
            probe = self._probe(c, kind, getattr(c, kind))
            if probe is not None:
                props[kind] = probe
        return {"name": c.name, "properties": props}

    def _ports(self, c: Container) -> list[dict[str, Any]]:
        out = []
        for p in c.ports or []:
            proto = (p.protocol or "TCP").upper()
            if proto not in ("TCP", "UDP"):
                self.warn("UnsupportedField", f"container {c.name}: port {p.containerPort}/{proto} is not "
                          "supported (TCP and UDP only)")
                continue
            if p.hostPort:
                self.warn("UnsupportedField", f"container {c.name}: hostPort {p.hostPort} is not supported; reach "
                          "the pod on its own address")
            out.append({"port": p.containerPort, "protocol": proto})
        return out

    # resources --------------------------------------------------------------------------------------------------
    def _resources(self, c: Container) -> dict[str, Any]:
        res = c.resources
        req = dict(res.requests or {}) if res else {}
        lim = dict(res.limits or {}) if res else {}

        def amount(key: str, scale: Decimal) -> tuple[float | None, float | None]:
            r, lm = req.get(key, lim.get(key)), lim.get(key)  # a limit alone is also the request (as Kubernetes)
            return (float(parse_quantity(r) / scale) if r is not None else None,
                    float(parse_quantity(lm) / scale) if lm is not None else None)

        cpu, cpu_lim = amount("cpu", Decimal(1))
        mem, mem_lim = amount("memory", GIB)
        requests: dict[str, Any] = {
            "cpu": _round_up(cpu if cpu else self.settings.default_cpu),
            "memoryInGB": _round_up(mem if mem else self.settings.default_memory_gb),
        }
        gpus = [k for k in {*req, *lim} if k.endswith("/gpu")]
        if gpus:
            count = int(parse_quantity(lim.get(gpus[0], req.get(gpus[0]))) or 0)
            if count:
                requests["gpu"] = {"count": count, "sku": self.settings.gpu_sku}
        for key in sorted({*req, *lim} - {"cpu", "memory", *gpus}):
            self.warn("UnsupportedField", f"container {c.name}: resource {key} is not supported on Corral")
        out: dict[str, Any] = {"requests": requests}
        limits: dict[str, Any] = {}
        if cpu_lim:
            limits["cpu"] = _round_up(cpu_lim)
        if mem_lim:
            limits["memoryInGB"] = _round_up(mem_lim)
        if limits:
            out["limits"] = limits
        return out

    def _fit_limits(self, containers: list[dict[str, Any]]) -> None:
        """Corral (as ACI) caps a container's limit at its group's total request. A Kubernetes limit above
        that raises the request of that container by the difference, so the limit is honoured; the pod gets
        a warning saying what Corral reserves (and bills)."""
        for key, unit in (("cpu", "cores"), ("memoryInGB", "GB")):
            for c in containers:
                lim = (c["properties"]["resources"].get("limits") or {}).get(key)
                total = sum(x["properties"]["resources"]["requests"][key] for x in containers)
                if lim is not None and lim > total + 1e-9:
                    req = c["properties"]["resources"]["requests"]
                    req[key] = _round_up(req[key] + lim - total)
                    self.warn("RequestRaised", f"container {c['name']}: its {key} limit {lim} {unit} is above the "
                              f"pod's total request {_round_up(total)} {unit}; Corral reserves the limit, so the "
                              f"container's request is raised to {req[key]} {unit}")

    # env --------------------------------------------------------------------------------------------------------
    def _env(self, c: Container) -> list[dict[str, Any]]:
        env: dict[str, dict[str, Any]] = {}
        for ef in c.envFrom or []:
            prefix = ef.prefix or ""
            if ef.configMapRef is not None:
                data = self._config_map(ef.configMapRef.name or "", bool(ef.configMapRef.optional))
                for k, v in (data or {}).items():
                    env[prefix + k] = {"name": prefix + k, "value": v.decode(errors="replace")}
            if ef.secretRef is not None:
                data = self._secret(ef.secretRef.name or "", bool(ef.secretRef.optional))
                for k, v in (data or {}).items():
                    env[prefix + k] = {"name": prefix + k, "secureValue": v.decode(errors="replace")}
        for e in c.env or []:
            item = self._env_var(c, e)
            if item is None:
                continue
            if "value" in item and e.valueFrom is None:  # $(VAR) refers to variables defined before it
                before = {k: v.get("value", v.get("secureValue")) for k, v in env.items() if "groupField" not in v}
                item["value"] = _expand(item["value"], before)
            env[e.name] = item
        return list(env.values())

    def _env_var(self, c: Container, e: EnvVar) -> dict[str, Any] | None:
        src = e.valueFrom
        if src is None:
            return {"name": e.name, "value": e.value or ""}
        if src.fieldRef is not None:
            return self._field_ref(e.name, src.fieldRef)
        if src.resourceFieldRef is not None:
            return {"name": e.name, "value": self._resource_ref(c, src.resourceFieldRef)}
        for ref, kind, field_ in ((src.configMapKeyRef, "ConfigMap", "value"), (src.secretKeyRef, "Secret",
                                                                                 "secureValue")):
            if ref is None:
                continue
            lookup = self._config_map if kind == "ConfigMap" else self._secret
            data = lookup(ref.name or "", bool(ref.optional))
            if data is None or ref.key not in data:
                if ref.optional:
                    return None
                raise MissingReference(f"couldn't find key {ref.key} in {kind} {self.ns}/{ref.name}")
            return {"name": e.name, field_: data[ref.key].decode(errors="replace")}
        self.warn("UnsupportedField", f"container {c.name}: env {e.name} uses a source Corral does not support")
        return None

    def _field_ref(self, name: str, ref: ObjectFieldSelector) -> dict[str, Any] | None:
        path = ref.fieldPath
        if path == "status.podIP" or path == "status.podIPs":
            return {"name": name, "groupField": "privateIp"}
        if path == "status.hostIP" or path == "status.hostIPs":
            return {"name": name, "groupField": "nodeIp"}
        value = self._field_value(path)
        if value is None:
            self.warn("UnsupportedField", f"env {name}: fieldRef {path} is not supported")
            return None
        return {"name": name, "value": value}

    def _field_value(self, path: str) -> str | None:
        meta, spec = self.meta, self.spec
        simple = {
            "metadata.name": meta.name, "metadata.namespace": self.ns, "metadata.uid": meta.uid,
            "spec.nodeName": spec.nodeName or self.settings.node_name,
            "spec.serviceAccountName": spec.serviceAccountName or "default",
        }
        if path in simple:
            return simple[path] or ""
        m = re.fullmatch(r"metadata\.(labels|annotations)\['([^']+)'\]", path)
        if m:
            table = (meta.labels if m[1] == "labels" else meta.annotations) or {}
            return table.get(m[2], "")
        if path in ("metadata.labels", "metadata.annotations"):
            table = (meta.labels if path == "metadata.labels" else meta.annotations) or {}
            return "\n".join(f'{k}="{v}"' for k, v in sorted(table.items()))
        return None

    def _resource_ref(self, c: Container, ref: ResourceFieldSelector) -> str:
        name = ref.containerName or c.name
        target = next((x for x in all_containers(self.pod) if x.name == name), c)
        res = target.resources
        kind, _, resource = ref.resource.partition(".")
        table = dict((res.limits if kind == "limits" else res.requests) or {}) if res else {}
        value = table.get(resource)
        if value is None and kind == "limits":  # an unset limit reads as the node's allocatable: our request
            value = str(self.settings.default_cpu) if resource == "cpu" else None
        divisor = parse_quantity(ref.divisor or "1") or Decimal(1)
        q = parse_quantity(value) if value is not None else Decimal(0)
        return str(int((q / divisor).to_integral_value(rounding=ROUND_CEILING)))

    def _config_map(self, name: str, optional: bool) -> dict[str, bytes] | None:
        data = self.inputs.config_maps.get(name)
        if data is None and not optional:
            raise MissingReference(f"configmap \"{name}\" not found")
        return data

    def _secret(self, name: str, optional: bool) -> dict[str, bytes] | None:
        data = self.inputs.secrets.get(name)
        if data is None and not optional:
            raise MissingReference(f"secret \"{name}\" not found")
        return data

    # probes -----------------------------------------------------------------------------------------------------
    def _probe(self, c: Container, kind: str, p: Probe | None) -> dict[str, Any] | None:
        if p is None:
            return None
        out: dict[str, Any] = {}
        for k in ("initialDelaySeconds", "periodSeconds", "failureThreshold", "successThreshold", "timeoutSeconds"):
            v = getattr(p, k)
            if v is not None and v >= (0 if k == "initialDelaySeconds" else 1):
                out[k] = v
        if p.exec is not None:
            out["exec"] = {"command": list(p.exec.command or [])}
        elif p.httpGet is not None:
            port = self._probe_port(c, kind, p.httpGet.port)
            if port is None:
                return None
            if p.httpGet.host:
                self.warn("UnsupportedField", f"container {c.name}: {kind} httpGet.host is ignored (the probe goes "
                          "to the pod's address)")
            http: dict[str, Any] = {"path": p.httpGet.path or "/", "port": port,
                                    "scheme": (p.httpGet.scheme or "HTTP").lower()}
            if p.httpGet.httpHeaders:
                http["httpHeaders"] = [{"name": h.name, "value": h.value} for h in p.httpGet.httpHeaders]
            out["httpGet"] = http
        elif p.tcpSocket is not None:
            port = self._probe_port(c, kind, p.tcpSocket.port)
            if port is None:
                return None
            out["tcpSocket"] = {"port": port}
        else:
            what = "grpc" if p.grpc is not None else "no action"
            self.warn("UnsupportedProbe", f"container {c.name}: {kind} with {what} is not supported on Corral "
                      "(exec, httpGet and tcpSocket are); the probe is not run")
            return None
        return out

    def _probe_port(self, c: Container, kind: str, port: int | str | None) -> int | None:
        """A probe's port: a number, or the name of a port the container declares (else a warning, None)."""
        if isinstance(port, int):
            return port
        if isinstance(port, str) and port.isdigit():
            return int(port)
        named: dict[str | None, ContainerPort] = {p.name: p for p in c.ports or []}
        found = named.get(port)
        if found is None:
            self.warn("UnsupportedProbe", f"container {c.name}: {kind} names port {port!r}, which the container "
                      "does not declare; the probe is not run")
            return None
        return found.containerPort

    # security ---------------------------------------------------------------------------------------------------
    def _security(self, c: Container) -> dict[str, Any]:
        psc = self.spec.securityContext
        sc: SecurityContext = c.securityContext or SecurityContext()
        out: dict[str, Any] = {}
        run_as_user = sc.runAsUser if sc.runAsUser is not None else (psc.runAsUser if psc else None)
        run_as_group = sc.runAsGroup if sc.runAsGroup is not None else (psc.runAsGroup if psc else None)
        non_root = sc.runAsNonRoot if sc.runAsNonRoot is not None else (psc.runAsNonRoot if psc else None)
        if run_as_user is not None:
            out["runAsUser"] = run_as_user
        if run_as_group is not None:
            out["runAsGroup"] = run_as_group
        # As kubelet: every container's process also belongs to the pod's fsGroup and supplementalGroups.
        gids = [] if psc is None else [*([psc.fsGroup] if psc.fsGroup is not None else []),
                                       *(psc.supplementalGroups or [])]
        if gids:
            out["supplementalGroups"] = list(dict.fromkeys(gids))
        if non_root and run_as_user == 0:
            raise MissingReference(f"container {c.name} has runAsNonRoot and runAsUser 0: it will not run")
        if non_root and run_as_user is None:
            self.warn("UnsupportedField", f"container {c.name}: runAsNonRoot is not checked against the image's "
                      "user; set runAsUser to be sure")
        if sc.privileged is not None:
            out["privileged"] = sc.privileged
        if sc.allowPrivilegeEscalation is not None:
            out["allowPrivilegeEscalation"] = sc.allowPrivilegeEscalation
        if sc.capabilities is not None and (sc.capabilities.add or sc.capabilities.drop):
            out["capabilities"] = {k: list(v) for k, v in (("add", sc.capabilities.add),
                                                            ("drop", sc.capabilities.drop)) if v}
        seccomp = sc.seccompProfile or (psc.seccompProfile if psc else None)
        if seccomp is not None:
            if seccomp.type == "Unconfined":
                out["seccompProfile"] = "Unconfined"
            elif seccomp.type == "Localhost":
                self.warn("UnsupportedField", f"container {c.name}: seccompProfile Localhost is not supported; "
                          "Corral's default profile applies")
        if sc.readOnlyRootFilesystem:
            self.warn("UnsupportedField", f"container {c.name}: readOnlyRootFilesystem is not supported on Corral")
        if sc.procMount and sc.procMount != "Default":
            self.warn("UnsupportedField", f"container {c.name}: procMount {sc.procMount} is not supported")
        if sc.seLinuxOptions or sc.appArmorProfile or sc.windowsOptions:
            self.warn("UnsupportedField", f"container {c.name}: seLinuxOptions, appArmorProfile and windowsOptions "
                      "are not supported on Corral")
        return out

    # volumes ----------------------------------------------------------------------------------------------------
    def _mounts(self, c: Container) -> list[dict[str, Any]]:
        out = []
        for m in c.volumeMounts or []:
            if m.subPath or m.subPathExpr:
                self.warn("UnsupportedField", f"container {c.name}: volumeMount {m.name} subPath is not supported; "
                          f"the whole volume is mounted at {m.mountPath}")
            if m.mountPropagation and m.mountPropagation != "None":
                self.warn("UnsupportedField", f"container {c.name}: mountPropagation {m.mountPropagation} is not "
                          "supported")
            out.append({"name": m.name, "mountPath": m.mountPath, "readOnly": bool(m.readOnly)})
        return out

    def _volumes(self) -> list[dict[str, Any]]:
        out = []
        psc = self.spec.securityContext
        for v in self.spec.volumes or []:
            found = self._volume_files(v)
            if found is not None:
                files, modes = found
                vol: dict[str, Any] = {"name": v.name,
                                       "secret": {k: base64.b64encode(d).decode() for k, d in files.items()}}
                if files:
                    vol["secretPermissions"] = _permissions(modes, psc.fsGroup if psc else None)
                out.append(vol)
            elif v.emptyDir is not None:
                if v.emptyDir.medium == "Memory" or v.emptyDir.sizeLimit:
                    self.warn("UnsupportedField", f"volume {v.name}: emptyDir medium and sizeLimit are not "
                              "supported; a plain directory on the node is used")
                out.append({"name": v.name, "emptyDir": {}})
            else:
                kind = next((k for k in UNSUPPORTED_VOLUMES if getattr(v, k, None) is not None), "unknown")
                self.warn("UnsupportedVolume", f"volume {v.name} ({kind}) is not supported on Corral; an empty "
                          "directory stands in for it")
                out.append({"name": v.name, "emptyDir": {}})
        return out

    def _volume_files(self, v: Volume) -> tuple[dict[str, bytes], dict[str, int]] | None:
        """The files of a configMap, secret, projected or downwardAPI volume and their modes (the volume's
        defaultMode, 0644 when unset, or the item's mode, as kubelet writes them); None for other kinds."""
        modes: dict[str, int] = {}
        if v.configMap is not None:
            src = v.configMap
            data = self._items(v.name, self._config_map(src.name or "", bool(src.optional)), src.items, modes)
            return data, _with_default(data, modes, src.defaultMode)
        if v.secret is not None:
            s = v.secret
            data = self._items(v.name, self._secret(s.secretName or "", bool(s.optional)), s.items, modes)
            return data, _with_default(data, modes, s.defaultMode)
        if v.downwardAPI is not None:
            data = self._downward(v.name, v.downwardAPI.items or [], modes)
            return data, _with_default(data, modes, v.downwardAPI.defaultMode)
        if v.projected is not None:
            files: dict[str, bytes] = {}
            for src in v.projected.sources or []:
                if src.configMap is not None:
                    files |= self._items(v.name, self._config_map(src.configMap.name or "",
                                                                  bool(src.configMap.optional)), src.configMap.items,
                                         modes)
                elif src.secret is not None:
                    files |= self._items(v.name, self._secret(src.secret.name or "", bool(src.secret.optional)),
                                         src.secret.items, modes)
                elif src.downwardAPI is not None:
                    files |= self._downward(v.name, src.downwardAPI.items or [], modes)
                elif src.serviceAccountToken is not None:
                    t = src.serviceAccountToken
                    token = self.inputs.tokens.get(token_key(self.pod, t.audience, t.expirationSeconds))
                    if token is None:
                        raise MissingReference(f"no service account token for volume {v.name} yet")
                    files[_flat(v.name, t.path, self.warn)] = token.encode()
                else:
                    self.warn("UnsupportedVolume", f"volume {v.name}: projected source clusterTrustBundle / "
                              "podCertificate is not supported on Corral")
            return files, _with_default(files, modes, v.projected.defaultMode)
        return None

    def _items(self, vol: str, data: dict[str, bytes] | None, items: list[Any] | None,
               modes: dict[str, int]) -> dict[str, bytes]:
        if data is None:
            return {}
        if not items:
            return {_flat(vol, k, self.warn): d for k, d in data.items()}
        out = {}
        for it in items:
            if it.key in data:
                name = _flat(vol, it.path, self.warn)
                out[name] = data[it.key]
                if it.mode is not None:
                    modes[name] = it.mode
        return out

    def _downward(self, vol: str, items: list[Any], modes: dict[str, int]) -> dict[str, bytes]:
        out = {}
        for it in items:
            if it.fieldRef is not None:
                value = self._field_value(it.fieldRef.fieldPath)
                if value is None:
                    self.warn("UnsupportedField", f"volume {vol}: fieldRef {it.fieldRef.fieldPath} is not supported")
                    continue
            elif it.resourceFieldRef is not None:
                c = next((x for x in all_containers(self.pod) if x.name == it.resourceFieldRef.containerName),
                         self.spec.containers[0])
                value = self._resource_ref(c, it.resourceFieldRef)
            else:
                continue
            name = _flat(vol, it.path, self.warn)
            out[name] = value.encode()
            if it.mode is not None:
                modes[name] = it.mode
        return out

    # pod-level settings -----------------------------------------------------------------------------------------
    def _dns(self) -> dict[str, Any] | None:
        policy = self.spec.dnsPolicy or "ClusterFirst"
        cfg = self.spec.dnsConfig
        servers: list[str] = []
        search: list[str] = []
        options: list[str] = []
        if policy in ("ClusterFirst", "ClusterFirstWithHostNet") and self.settings.cluster_dns:
            d = self.settings.cluster_domain
            servers = list(self.settings.cluster_dns)
            search = [f"{self.ns}.svc.{d}", f"svc.{d}", d]
            if self.settings.corral_search:
                search.append(self.settings.corral_search)
            options = ["ndots:5"]
        elif policy == "None" and cfg is None:
            self.warn("UnsupportedField", "dnsPolicy None without dnsConfig: Corral's DNS is used")
        if cfg is not None:
            servers += [s for s in cfg.nameservers or [] if s not in servers]
            search += [s for s in cfg.searches or [] if s not in search]
            for o in cfg.options or []:
                opts = [x.split(":")[0] for x in options]
                if o.name in opts:
                    options.pop(opts.index(o.name))
                options.append(f"{o.name}:{o.value}" if o.value is not None else o.name)
        if not servers:
            if search or options:
                self.warn("UnsupportedField", "dnsConfig searches and options need nameservers on Corral (or a "
                          "cluster DNS configured on the node); Corral's DNS settings are used")
            return None  # Corral's DNS: its own names, then the node's resolvers
        out: dict[str, Any] = {"nameServers": servers}
        if search:
            out["searchDomains"] = " ".join(search)
        if options:
            out["options"] = " ".join(options)
        return out

    def _registry_credentials(self) -> list[dict[str, Any]]:
        out = []
        for ref in self.spec.imagePullSecrets or []:
            data = self.inputs.secrets.get(ref.name or "")
            if data is None:
                self.warn("FailedToRetrieveImagePullSecret", f"image pull secret {ref.name} was not found; images "
                          "are pulled without it")
                continue
            raw = data.get(".dockerconfigjson") or data.get(".dockercfg")
            if raw is None:
                continue
            try:
                cfg = json.loads(raw)
            except ValueError:
                self.warn("FailedToRetrieveImagePullSecret", f"image pull secret {ref.name} is not valid JSON")
                continue
            auths = cfg.get("auths", cfg) if isinstance(cfg, dict) else {}
            for server, entry in auths.items():
                if not isinstance(entry, dict):
                    continue
                user, password = entry.get("username"), entry.get("password")
                if (not user or not password) and entry.get("auth"):
                    user, _, password = base64.b64decode(entry["auth"]).decode(errors="replace").partition(":")
                host = re.sub(r"^https?://", "", server).split("/")[0]
                if user and password:
                    out.append({"server": host, "username": user, "password": password})
        return out


DEFAULT_FILE_MODE = 0o644  # kubelet's, when a volume sets no defaultMode


def _with_default(files: dict[str, bytes], modes: dict[str, int], default: int | None) -> dict[str, int]:
    base = DEFAULT_FILE_MODE if default is None else default
    return {name: modes.get(name, base) for name in files}


def _permissions(modes: dict[str, int], fs_group: int | None) -> dict[str, Any]:
    """Corral's secretPermissions for these file modes: the commonest as defaultMode, the others by name."""
    counts: dict[int, int] = {}
    for m in modes.values():
        counts[m] = counts.get(m, 0) + 1
    default = max(counts, key=lambda m: (counts[m], m == DEFAULT_FILE_MODE)) if counts else DEFAULT_FILE_MODE
    out: dict[str, Any] = {"defaultMode": default}
    if others := {name: m for name, m in sorted(modes.items()) if m != default}:
        out["modes"] = others
    if fs_group is not None:
        out["group"] = fs_group
    return out


def _flat(vol: str, path: str, warn: Any) -> str:
    """Corral's file volumes are flat: a nested item path keeps its last part."""
    if "/" in path.strip("/"):
        flat = path.strip("/").rsplit("/", 1)[-1]
        warn("UnsupportedField", f"volume {vol}: item path {path} has directories, which Corral volumes cannot "
             f"hold; the file is {flat}")
        return flat
    return path.strip("/")


def _round_up(v: float) -> float:
    """Corral takes decimal cores and GB; keep three decimals, never below what was asked."""
    return float((Decimal(str(round(v, 9))) * 1000).to_integral_value(rounding=ROUND_CEILING) / 1000)


_REF = re.compile(r"\$\$|\$\(([A-Za-z_][A-Za-z0-9_.-]*)\)")


def _expand(value: str, env: dict[str, str]) -> str:
    """Kubernetes' $(VAR) expansion: a defined variable is replaced, an unknown one kept, $$ is a literal $."""
    def sub(m: re.Match[str]) -> str:
        if m[0] == "$$":
            return "$"
        return env.get(m[1], m[0])

    return _REF.sub(sub, value)

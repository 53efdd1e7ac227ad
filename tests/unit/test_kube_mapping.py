"""Pod -> container group mapping and group -> pod status, on the client library's (lightkube) models of
pods from the Kubernetes documentation and of a pod as the API server serialises it (tests/data/kube)."""

from __future__ import annotations

import base64
from datetime import UTC, datetime
from pathlib import Path

import pytest
import yaml
from lightkube.models.core_v1 import (
    Capabilities,
    EmptyDirVolumeSource,
    ExecAction,
    HostPathVolumeSource,
    KeyToPath,
    Lifecycle,
    LifecycleHandler,
    PodSecurityContext,
    SecurityContext,
    Sysctl,
    Volume,
    VolumeMount,
)
from lightkube.resources.core_v1 import Pod

from corral.api.render import render_group
from corral.control.groups import GroupView, volume_shape
from corral.kube.mapping import (
    MappingSettings,
    MissingReference,
    PodInputs,
    TokenKey,
    group_name,
    pod_to_group,
    references,
)
from corral.kube.status import pod_status, qos_class
from corral.model.group import ContainerGroup
from corral.model.records import GroupMeta, GroupRecord
from corral.model.status import ContainerStateView, ContainerStatus, GroupStatus

DATA = Path(__file__).parent.parent / "data" / "kube"
SETTINGS = MappingSettings(node_name="corral", cluster_dns=["10.96.0.10"], corral_search="default.corral.local")


def load(name: str, **meta: str) -> Pod:
    raw = yaml.safe_load((DATA / name).read_text())
    raw.setdefault("apiVersion", "v1")
    pod = Pod.from_dict(raw)
    assert pod.metadata is not None and pod.spec is not None
    # What the API server adds to every pod it stores.
    pod.metadata.namespace = pod.metadata.namespace or meta.get("namespace", "default")
    pod.metadata.uid = pod.metadata.uid or meta.get("uid", "0f3a9c1e-1111-4222-8333-444455556666")
    pod.spec.nodeName = "corral"
    return pod


def mapped(pod: Pod, inputs: PodInputs | None = None, settings: MappingSettings = SETTINGS):  # type: ignore[no-untyped-def]
    plan = pod_to_group(pod, inputs or PodInputs(), settings)
    ContainerGroup.model_validate(plan.body)  # Corral accepts what the mapping produces
    return plan, plan.body["properties"]


def container(props: dict, i: int = 0) -> dict:  # type: ignore[type-arg]
    return props["containers"][i]["properties"]


def reasons(plan) -> list[str]:  # type: ignore[no-untyped-def]
    return [w.reason for w in plan.warnings]


def test_command_and_args_and_restart_policy() -> None:
    plan, props = mapped(load("commands.yaml"))
    c = container(props)
    assert c["command"] == ["printenv"] and c["args"] == ["HOSTNAME", "KUBERNETES_PORT"]
    assert props["restartPolicy"] == "OnFailure" and plan.warnings == []
    # args alone: the image's entrypoint runs with them (Corral's args extension)
    _, props = mapped(load("exec-liveness.yaml"))
    c = container(props)
    assert "command" not in c and c["args"][:2] == ["/bin/sh", "-c"]


def test_group_name_tags_and_names_that_need_a_hash() -> None:
    plan, _ = mapped(load("commands.yaml"))
    assert plan.name == "default-command-demo"
    assert plan.body["tags"] == {"k8s-node": "corral", "k8s-namespace": "default", "k8s-pod": "command-demo",
                                 "k8s-uid": "0f3a9c1e-1111-4222-8333-444455556666"}
    long = group_name("team-a", "web.v2-" + "x" * 80)
    assert len(long) <= 63 and long.startswith("team-a-web-v2-") and long == group_name("team-a", "web.v2-" + "x" * 80)
    assert group_name("a", "b.c") != group_name("a-b", "c")


def test_init_containers_ports_empty_dir_and_default_dns() -> None:
    plan, props = mapped(load("init-containers.yaml"))
    init = props["initContainers"][0]
    assert init["name"] == "install" and init["properties"]["command"][0] == "wget"
    assert init["properties"]["volumeMounts"] == [{"name": "workdir", "mountPath": "/work-dir", "readOnly": False}]
    assert container(props)["ports"] == [{"port": 80, "protocol": "TCP"}]
    assert props["volumes"] == [{"name": "workdir", "emptyDir": {}}]
    assert "dnsConfig" not in props  # dnsPolicy Default: the node's (Corral's) DNS


def test_env_field_refs_pod_ip_and_names() -> None:
    plan, props = mapped(load("dapi-envars-pod.yaml", namespace="team"))
    env = {e["name"]: e for e in container(props)["environmentVariables"]}
    assert env["MY_NODE_NAME"]["value"] == "corral"
    assert env["MY_POD_NAME"]["value"] == "dapi-envars-fieldref"
    assert env["MY_POD_NAMESPACE"]["value"] == "team"
    assert env["MY_POD_IP"] == {"name": "MY_POD_IP", "groupField": "privateIp"}
    assert env["MY_POD_SERVICE_ACCOUNT"]["value"] == "default"
    assert props["restartPolicy"] == "Never"


def test_env_from_config_map_and_secret_and_their_absence() -> None:
    pod = load("pod-single-configmap-env-variable.yaml")
    assert references(pod).config_maps == {"special-config"}
    with pytest.raises(MissingReference, match='configmap "special-config" not found'):
        mapped(pod)
    with pytest.raises(MissingReference, match="couldn't find key special.how"):
        mapped(pod, PodInputs(config_maps={"special-config": {"other": b"x"}}))
    _, props = mapped(pod, PodInputs(config_maps={"special-config": {"special.how": b"very"}}))
    assert container(props)["environmentVariables"] == [{"name": "SPECIAL_LEVEL_KEY", "value": "very"}]

    pod = load("pod-single-secret-env-variable.yaml")
    assert references(pod).secrets == {"backend-user"}
    _, props = mapped(pod, PodInputs(secrets={"backend-user": {"username": b"admin"}}))
    assert container(props)["environmentVariables"] == [{"name": "SECRET_USERNAME", "secureValue": "admin"}]


def test_config_map_volume_files_change_in_place() -> None:
    pod = load("pod-configmap-volume.yaml")
    one = PodInputs(config_maps={"special-config": {"SPECIAL_LEVEL": b"very", "SPECIAL_TYPE": b"charm"}})
    plan1, props = mapped(pod, one)
    vol = props["volumes"][0]
    assert vol["name"] == "config-volume"
    assert {k: base64.b64decode(v) for k, v in vol["secret"].items()} == {"SPECIAL_LEVEL": b"very",
                                                                          "SPECIAL_TYPE": b"charm"}
    two = PodInputs(config_maps={"special-config": {"SPECIAL_LEVEL": b"extremely", "SPECIAL_TYPE": b"charm"}})
    plan2, _ = mapped(pod, two)
    assert plan1.digest() != plan2.digest()
    # Only file contents changed: Corral updates the running group in place (no new group).
    g1, g2 = ContainerGroup.model_validate(plan1.body), ContainerGroup.model_validate(plan2.body)
    assert volume_shape(g1) == volume_shape(g2)


def test_file_modes_and_fs_group_as_kubelet_writes_them() -> None:
    pod = load("pod-configmap-volume.yaml")
    inputs = PodInputs(config_maps={"special-config": {"SPECIAL_LEVEL": b"very", "SPECIAL_TYPE": b"charm"}})
    _, props = mapped(pod, inputs)
    assert props["volumes"][0]["secretPermissions"] == {"defaultMode": 0o644}  # kubelet's default
    # defaultMode and an item's own mode; fsGroup owns the files and joins every process, with
    # supplementalGroups
    cm = pod.spec.volumes[0].configMap  # type: ignore[index,union-attr]
    cm.defaultMode = 0o440
    cm.items = [KeyToPath(key="SPECIAL_LEVEL", path="level", mode=0o400), KeyToPath(key="SPECIAL_TYPE", path="type"),
                KeyToPath(key="SPECIAL_TYPE", path="type-again")]
    pod.spec.securityContext = PodSecurityContext(runAsUser=1000, fsGroup=2000, supplementalGroups=[4000, 2000])  # type: ignore[union-attr]
    plan, props = mapped(pod, inputs)
    assert props["volumes"][0]["secretPermissions"] == {"defaultMode": 0o440, "modes": {"level": 0o400},
                                                        "group": 2000}
    assert container(props)["securityContext"] == {"runAsUser": 1000, "supplementalGroups": [2000, 4000]}
    assert plan.warnings == []


def test_projected_service_account_token_from_token_request() -> None:
    pod = load("pod-projected-svc-token.yaml")
    key = TokenKey("default", "vault", 7200)
    assert references(pod).tokens == {key}
    with pytest.raises(MissingReference):
        mapped(pod)
    _, props = mapped(pod, PodInputs(tokens={key: "eyJhbGciOi.token"}))
    assert base64.b64decode(props["volumes"][0]["secret"]["vault-token"]) == b"eyJhbGciOi.token"


def test_probes_tcp_http_exec_and_unsupported_grpc() -> None:
    _, props = mapped(load("tcp-liveness-readiness.yaml"))
    c = container(props)
    assert c["readinessProbe"] == {"tcpSocket": {"port": 8080}, "initialDelaySeconds": 15, "periodSeconds": 10}
    assert c["livenessProbe"]["tcpSocket"] == {"port": 8080}
    _, props = mapped(load("http-liveness.yaml"))
    assert container(props)["livenessProbe"] == {
        "httpGet": {"path": "/healthz", "port": 8080, "scheme": "http",
                    "httpHeaders": [{"name": "Custom-Header", "value": "Awesome"}]},
        "initialDelaySeconds": 3, "periodSeconds": 3}
    _, props = mapped(load("exec-liveness.yaml"))
    assert container(props)["livenessProbe"]["exec"] == {"command": ["cat", "/tmp/healthy"]}
    plan, props = mapped(load("grpc-liveness.yaml"))
    assert "livenessProbe" not in container(props)
    assert reasons(plan) == ["UnsupportedProbe"] and "grpc is not supported" in plan.warnings[0].message


def test_startup_probe_and_named_ports() -> None:
    pod = load("tcp-liveness-readiness.yaml")
    c = pod.spec.containers[0]  # type: ignore[union-attr]
    c.ports[0].name = "proxy"  # type: ignore[index]
    c.startupProbe = type(c.readinessProbe)(tcpSocket=type(c.readinessProbe.tcpSocket)(port="proxy"),  # type: ignore
                                            failureThreshold=30, periodSeconds=1)
    _, props = mapped(pod)
    assert container(props)["startupProbe"] == {"tcpSocket": {"port": 8080}, "failureThreshold": 30,
                                                "periodSeconds": 1}


def test_requests_and_limits_raise_the_request_when_the_limit_is_above_it() -> None:
    plan, props = mapped(load("memory-request-limit.yaml"))
    res = container(props)["resources"]
    assert res["limits"] == {"memoryInGB": 0.196}  # 200Mi
    assert res["requests"]["memoryInGB"] == 0.196 and res["requests"]["cpu"] == SETTINGS.default_cpu
    assert reasons(plan) == ["RequestRaised"] and "above the pod's total request 0.098 GB" in plan.warnings[0].message


def test_security_context() -> None:
    _, props = mapped(load("security-context-4.yaml"))
    assert container(props)["securityContext"] == {"capabilities": {"add": ["NET_ADMIN", "SYS_TIME"]}}
    pod = load("security-context-4.yaml")
    pod.spec.securityContext = PodSecurityContext(runAsUser=1000, runAsGroup=3000)  # type: ignore[union-attr]
    pod.spec.containers[0].securityContext = SecurityContext(  # type: ignore[union-attr]
        allowPrivilegeEscalation=False, capabilities=Capabilities(drop=["ALL"]), runAsGroup=4000)
    _, props = mapped(pod)
    assert container(props)["securityContext"] == {"runAsUser": 1000, "runAsGroup": 4000,
                                                   "allowPrivilegeEscalation": False,
                                                   "capabilities": {"drop": ["ALL"]}}


def test_pod_sysctls_become_the_groups_and_the_others_are_warnings() -> None:
    pod = load("security-context-4.yaml")
    # The example of the Kubernetes sysctl docs, a router's ip_forward, one in "/" notation, a bad value.
    pod.spec.securityContext = PodSecurityContext(sysctls=[  # type: ignore[union-attr]
        Sysctl(name="kernel.shm_rmid_forced", value="0"), Sysctl(name="net.core.somaxconn", value="1024"),
        Sysctl(name="kernel.msgmax", value="65536"), Sysctl(name="net.ipv4.ip_forward", value="1"),
        Sysctl(name="net/ipv4/ip_local_port_range", value="32768 60999"),
        Sysctl(name="net.ipv4.tcp_congestion_control", value="bbr")])
    plan, props = mapped(pod)
    assert props["sysctls"] == [{"name": "net.core.somaxconn", "value": "1024"},
                                {"name": "net.ipv4.ip_forward", "value": "1"},
                                {"name": "net.ipv4.ip_local_port_range", "value": "32768 60999"}]
    assert reasons(plan) == ["UnsupportedField"] * 3
    messages = " | ".join(w.message for w in plan.warnings)
    for needle in ("kernel.shm_rmid_forced=0 is not set", "kernel.msgmax=65536 is not set",
                   "net.ipv4.tcp_congestion_control=bbr is not set: 'bbr' is not a sysctl value"):
        assert needle in messages, needle
    _, props = mapped(load("security-context-4.yaml"))
    assert "sysctls" not in props


def test_host_aliases_and_custom_dns() -> None:
    _, props = mapped(load("hostaliases-pod.yaml"))
    assert props["hostAliases"] == [{"ip": "127.0.0.1", "hostnames": ["foo.local", "bar.local"]},
                                    {"ip": "10.1.2.3", "hostnames": ["foo.remote", "bar.remote"]}]
    _, props = mapped(load("custom-dns.yaml"))
    assert props["dnsConfig"] == {"nameServers": ["192.0.2.1"],
                                  "searchDomains": "ns1.svc.cluster-domain.example my.dns.search.suffix",
                                  "options": "ndots:2 edns0"}


def test_scheduling_fields_are_not_warned_about() -> None:
    plan, _ = mapped(load("pod-with-toleration.yaml"))
    assert plan.warnings == []


def test_a_pod_as_the_api_server_serialises_it() -> None:
    pod = load("apiserver-serialized-pod.yaml")
    refs = references(pod)
    key = TokenKey("default", "", 3607)
    assert refs.tokens == {key} and refs.config_maps == {"kube-root-ca.crt"}
    inputs = PodInputs(config_maps={"kube-root-ca.crt": {"ca.crt": b"-----BEGIN CERTIFICATE-----\n"}},
                       tokens={key: "header.payload.sig"})
    plan, props = mapped(pod, inputs)
    assert plan.warnings == [] and plan.name == "dev-rng-65d885d498-sgnhm"
    files = {k: base64.b64decode(v) for k, v in props["volumes"][0]["secret"].items()}
    assert files == {"token": b"header.payload.sig", "ca.crt": b"-----BEGIN CERTIFICATE-----\n", "namespace": b"dev"}
    assert props["volumes"][0]["secretPermissions"] == {"defaultMode": 420}  # readable by the pod's user
    assert container(props)["volumeMounts"] == [{"name": "kube-api-access-qgp4j", "readOnly": True,
                                                 "mountPath": "/var/run/secrets/kubernetes.io/serviceaccount"}]
    # dnsPolicy ClusterFirst with a cluster DNS configured on the node; Corral's names searched last.
    assert props["dnsConfig"] == {"nameServers": ["10.96.0.10"], "options": "ndots:5",
                                  "searchDomains": "dev.svc.cluster.local svc.cluster.local cluster.local "
                                                   "default.corral.local"}
    _, props = mapped(pod, inputs, MappingSettings(node_name="corral"))
    assert "dnsConfig" not in props  # no cluster DNS configured: Corral's DNS
    assert qos_class(pod) == "BestEffort"


def test_what_corral_cannot_honour_is_a_warning_never_a_silent_drop() -> None:
    pod = load("init-containers.yaml")
    spec = pod.spec
    assert spec is not None
    spec.hostNetwork = True
    spec.volumes.append(Volume(name="host", hostPath=HostPathVolumeSource(path="/var/log")))  # type: ignore[union-attr]
    spec.volumes.append(Volume(name="mem", emptyDir=EmptyDirVolumeSource(medium="Memory")))  # type: ignore[union-attr]
    c = spec.containers[0]
    c.volumeMounts.append(VolumeMount(name="host", mountPath="/logs", subPath="app"))  # type: ignore[union-attr]
    c.lifecycle = Lifecycle(preStop=LifecycleHandler(exec=ExecAction(command=["sleep", "5"])))
    c.ports[0].hostPort = 8080  # type: ignore[index]
    c.stdin = True
    plan, props = mapped(pod)
    messages = " | ".join(w.message for w in plan.warnings)
    for needle in ("spec.hostNetwork", "volume host (hostPath) is not supported", "emptyDir medium",
                   "subPath is not supported", "lifecycle hooks", "hostPort 8080", "stdin and tty"):
        assert needle in messages, needle
    # The unsupported volume is still there (an empty directory), so the mount that names it works.
    assert {"name": "host", "emptyDir": {}} in props["volumes"]


def _rendered(pod_status_: GroupStatus | None, plan_body: dict) -> dict:  # type: ignore[type-arg]
    meta = GroupMeta(uid="u1", subscription="s", resourceGroup="kube", name="g", createdAt=datetime.now(UTC))
    record = GroupRecord(spec=ContainerGroup.model_validate(plan_body), meta=meta)
    return render_group(GroupView(key="/groups/s/kube/g", version=1, record=record, status=pod_status_))


def test_pod_status_from_the_group_ready_follows_readiness() -> None:
    pod = load("tcp-liveness-readiness.yaml")
    plan, _ = mapped(pod)
    started = datetime(2026, 1, 1, 12, 0, tzinfo=UTC)
    running = ContainerStatus(currentState=ContainerStateView(state="Running", startTime=started), ready=False)
    st = GroupStatus(uid="u1", node="n1", state="Running", privateIp="10.106.0.7", containers={"goproxy": running})
    status = pod_status(pod, _rendered(st, plan.body), host_ip="192.0.2.10")
    assert status.phase == "Running" and status.podIP == "10.106.0.7" and status.hostIP == "192.0.2.10"
    cond = {c.type: c.status for c in status.conditions or []}
    assert cond == {"PodReadyToStartContainers": "True", "Initialized": "True", "Ready": "False",
                    "ContainersReady": "False", "PodScheduled": "True"}
    cs = status.containerStatuses[0]  # type: ignore[index]
    assert cs.ready is False and cs.started is True and cs.state.running.startedAt == started  # type: ignore

    running.ready = True
    status = pod_status(pod, _rendered(st, plan.body), host_ip="192.0.2.10")
    assert {c.type: c.status for c in status.conditions or []}["Ready"] == "True"

    # A crash: terminated with its exit code, then waiting to restart with lastState and restartCount.
    crashed = ContainerStateView(state="Terminated", startTime=started, finishTime=started, exitCode=3,
                                 detailStatus="Error")
    st.containers["goproxy"] = ContainerStatus(restartCount=2, previousState=crashed,
                                               currentState=ContainerStateView(state="Waiting"))
    status = pod_status(pod, _rendered(st, plan.body), host_ip="192.0.2.10")
    cs = status.containerStatuses[0]  # type: ignore[index]
    assert cs.restartCount == 2 and cs.state.waiting.reason == "CrashLoopBackOff"  # type: ignore[union-attr]
    assert cs.lastState.terminated.exitCode == 3 and cs.lastState.terminated.reason == "Error"  # type: ignore

    st.state, st.containers["goproxy"] = "Failed", ContainerStatus(currentState=crashed)
    status = pod_status(pod, _rendered(st, plan.body), host_ip="192.0.2.10")
    assert status.phase == "Failed" and status.containerStatuses[0].state.terminated.exitCode == 3  # type: ignore


def test_pod_status_before_the_group_exists_and_init_containers() -> None:
    pod = load("init-containers.yaml")
    status = pod_status(pod, None, host_ip="192.0.2.10",
                        waiting=("CreateContainerConfigError", 'configmap "x" not found'))
    assert status.phase == "Pending" and status.podIP is None
    assert status.containerStatuses[0].state.waiting.reason == "CreateContainerConfigError"  # type: ignore
    cond = {c.type: c.status for c in status.conditions or []}
    assert cond["PodScheduled"] == "True" and cond["Initialized"] == "False"
    plan, _ = mapped(pod)
    done = ContainerStatus(currentState=ContainerStateView(state="Terminated", exitCode=0, detailStatus="Completed"))
    st = GroupStatus(uid="u1", node="n1", state="Pending", privateIp="10.106.0.8", initContainers={"install": done})
    status = pod_status(pod, _rendered(st, plan.body), host_ip="192.0.2.10")
    assert status.initContainerStatuses[0].state.terminated.reason == "Completed"  # type: ignore
    assert {c.type: c.status for c in status.conditions or []}["Initialized"] == "True"

"""Error classes shared by every layer.

Each error carries an ARM-style ``code`` and the HTTP status the API answers
with, so a layer deep in the node agent can raise something the API turns into
a clear response without translating it again.
"""

from __future__ import annotations


class CorralError(Exception):
    """Base class: ``code`` and ``status`` are what the API reports."""

    code = "InternalError"
    status = 500

    def __init__(self, message: str, *, target: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.target = target


class InvalidRequest(CorralError):
    """The request names something wrong; the message says which field and why."""

    code = "InvalidRequestContent"
    status = 400


class NotFound(CorralError):
    code = "ResourceNotFound"
    status = 404


class Conflict(CorralError):
    code = "Conflict"
    status = 409


class VersionConflict(Conflict):
    """A compare-and-swap write lost against a newer version."""

    code = "ResourceVersionConflict"


class Unauthorized(CorralError):
    code = "AuthenticationFailed"
    status = 401


class ImageError(CorralError):
    """An image could not be found, pulled, unpacked or pushed."""

    code = "InaccessibleImage"
    status = 400


class RegistryAuthError(ImageError):
    code = "RegistryAuthenticationFailed"


class RuntimeFailure(CorralError):
    """The OCI runtime or conmon refused or failed to run a container."""

    code = "ContainerRuntimeError"


class NetworkError(CorralError):
    """A network sandbox could not be built or removed."""

    code = "NetworkSetupError"


class NetworkCapacityExceeded(NetworkError):
    """A node or virtual network has no room for another sandbox (address block or limit full)."""

    code = "NetworkCapacityExceeded"
    status = 409


class NetworkFeatureUnsupported(NetworkError):
    """The node's network mode cannot do what was asked (e.g. per-group security rules in bridge mode)."""

    code = "NetworkFeatureUnsupported"
    status = 400


class ExecTimeout(RuntimeFailure):
    """A command run inside a container did not finish within its timeout."""

    code = "ContainerExecTimeout"
    status = 408


class VolumeError(CorralError):
    """A volume of a container group could not be prepared (bad git repo, missing share, ...)."""

    code = "VolumeSetupError"
    status = 400


class InvalidAddressPrefix(InvalidRequest):
    """An address prefix is not a CIDR, overlaps a sibling, or lies outside its virtual network."""

    code = "InvalidAddressPrefix"


class InUseSubnetCannotBeDeleted(Conflict):
    """A subnet (or its virtual network) still has container groups deployed into it."""

    code = "InUseSubnetCannotBeDeleted"


class InUseNetworkSecurityGroupCannotBeDeleted(Conflict):
    """A network security group is still attached to a subnet."""

    code = "InUseNetworkSecurityGroupCannotBeDeleted"


class InUseRouteTableCannotBeDeleted(Conflict):
    """A route table is still associated with a subnet."""

    code = "InUseRouteTableCannotBeDeleted"


class VnetAddressSpacesOverlap(InvalidRequest):
    """Two virtual networks to be peered (or two peers of one network) share addresses."""

    code = "VnetAddressSpacesOverlap"


class RemotePeeringIsDisconnected(InvalidRequest):
    """The other side's peering is Disconnected: it must be updated or re-created first."""

    code = "RemotePeeringIsDisconnected"


class DnsNameLabelNotAvailable(Conflict):
    """Another container group in the same location already uses this dnsNameLabel."""

    code = "DnsNameLabelNotAvailable"


class SubscriptionNotFound(NotFound):
    """A subscription other than the installation's one."""

    code = "SubscriptionNotFound"


class InvalidResourceGroupName(InvalidRequest):
    """A resource group name ARM would refuse."""

    code = "InvalidResourceGroupName"


class LocationNotAvailable(InvalidRequest):
    """A location other than the installation's one."""

    code = "LocationNotAvailableForResourceGroup"


class InvalidResource(InvalidRequest):
    """A token asked for another audience than Corral's resource manager."""

    code = "InvalidResource"


class StoreUnavailable(CorralError):
    """No store endpoint answered, or a write's outcome is unknown because its endpoint failed mid-request."""

    code = "ServiceUnavailable"
    status = 503


class StoreRequestInvalid(CorralError):
    """The store refused a request as malformed: too many operations, a value too large, a repeated key.

    A bug of the caller, not of the user's input, so the API answers 500 rather than 400.
    """

    code = "StoreRequestInvalid"


class StorageError(CorralError):
    """A storage server of the cluster's file shares (GlusterFS) or one of its volumes failed."""

    code = "StorageError"


class PortUnreachable(Conflict):
    """Nothing accepts connections on the port of the group that a port-forward asked for."""

    code = "PortUnreachable"


class InvalidMetricQuery(InvalidRequest):
    """A metrics query names an unknown metric, aggregation or dimension, or a malformed timespan or interval."""

    code = "BadRequest"


class CsrfTokenInvalid(CorralError):
    """A portal request that changes something came without the session's CSRF token (X-CSRF-Token)."""

    code = "CsrfTokenInvalid"
    status = 403


class Forbidden(CorralError):
    """Authenticated, but not allowed: a node asking for another node's assignments, say."""

    code = "AuthorizationFailed"
    status = 403


class NotAssigned(Forbidden):
    """A node acted on a group that is not bound to it (any more): another node owns it now."""

    code = "GroupNotAssignedToNode"


class StaleBinding(Conflict):
    """A node reported on an older binding (epoch) of a group than the one in force."""

    code = "StaleGroupBinding"


class ControlPlaneUnavailable(CorralError):
    """No control-plane server answered (an agent cut off from every server)."""

    code = "ControlPlaneUnavailable"
    status = 503


class PreconditionFailed(CorralError):
    """An ``If-Match`` etag no longer matches: the resource changed since the client read it."""

    code = "PreconditionFailed"
    status = 412


class StandbyPoolEmpty(Conflict):
    """A create asked to fail when its standby pool had no ready container group to hand over."""

    code = "StandbyPoolEmpty"


def error_from(code: str, status: int, message: str) -> CorralError:
    """The error class named by an API error ``code`` (as another Corral process sent it), else a generic one."""
    todo: list[type[CorralError]] = [CorralError]
    while todo:
        cls = todo.pop()
        if cls.code == code:
            return cls(message)
        todo.extend(cls.__subclasses__())
    err = CorralError(message)
    err.code, err.status = code, status
    return err

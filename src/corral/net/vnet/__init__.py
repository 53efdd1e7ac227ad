"""corral-vnet: a CNI plugin giving sandboxes addresses in a virtual network without encapsulation.

The executable (``cli.main``) and the node agent (in-process) share this library.
"""

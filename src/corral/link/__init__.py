"""The agent <-> control plane protocol, imported by both sides.

``protocol`` holds the two interfaces (``ControlPlaneLink``: what an agent asks of the control
plane; ``NodeClient``: what the control plane asks of a node); ``local`` serves the first one
in-process from the store, for the all-in-one.
"""

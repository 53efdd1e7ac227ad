"""The Kubernetes virtual node: pods bound to a node named for Corral run as Corral container groups.

A client of Corral's public HTTP API only (``corral_api``), like any outside connector. Modules:
``mapping`` (pod -> group), ``status`` (group -> pod status), ``node`` (the Node object and its Lease),
``pods`` (the pod controller), ``kubelet`` (the kubelet API on :10250), ``streams`` (exec, attach and
port-forward, and their websocket transport), ``spdy`` and ``spdy_streams`` (the SPDY/3.1 transport),
``logs`` (which log lines are a container's run), ``metrics`` (stats/summary, metrics/resource),
``authz`` (TokenReview / SubjectAccessReview), ``connector`` (runs them all).
"""

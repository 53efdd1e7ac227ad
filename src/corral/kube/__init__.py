"""The Kubernetes virtual node: pods bound to a node named for Corral run as Corral container groups.

A client of Corral's public HTTP API only (``corral_api``), like any outside connector. Modules:
``mapping`` (pod -> group), ``status`` (group -> pod status), ``node`` (the Node object and its Lease),
``pods`` (the pod controller), ``kubelet`` (the kubelet API on :10250), ``streams`` (kubelet's exec and
port-forward wire protocols), ``authz`` (TokenReview / SubjectAccessReview), ``connector`` (runs them all).
"""

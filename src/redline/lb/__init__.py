"""redline.lb: nginx in front of redline replicas, and a supervisor that keeps them up.

* :func:`render_nginx_conf` turns :class:`NginxOptions` into a complete nginx.conf.
* :class:`ClusterSupervisor` runs N replicas + nginx with active health checks, crash
  restarts and zero-failure rolling restarts (``redline cluster``).
"""

from redline.lb.cluster_options import ClusterOptions, HealthCheck
from redline.lb.nginx import NGINX_MISSING_HINT, NginxMaster, check_nginx_conf, find_nginx
from redline.lb.options import (
    NginxOptions,
    RateLimit,
    Strategy,
    UpstreamServer,
    make_rate_limit,
)
from redline.lb.render import render_nginx_conf
from redline.lb.replica import Replica, ReplicaCommand, ReplicaState, serve_command
from redline.lb.status import ClusterStatus, ReplicaStatus, read_status
from redline.lb.supervisor import ClusterSupervisor

__all__ = [
    "NGINX_MISSING_HINT",
    "ClusterOptions",
    "ClusterStatus",
    "ClusterSupervisor",
    "HealthCheck",
    "NginxMaster",
    "NginxOptions",
    "RateLimit",
    "Replica",
    "ReplicaCommand",
    "ReplicaState",
    "ReplicaStatus",
    "Strategy",
    "UpstreamServer",
    "check_nginx_conf",
    "find_nginx",
    "make_rate_limit",
    "read_status",
    "render_nginx_conf",
    "serve_command",
]

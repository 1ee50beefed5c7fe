"""redline.lb: nginx in front of redline replicas, and a supervisor that keeps them up.

* :func:`render_nginx_conf` turns :class:`NginxOptions` into a complete nginx.conf.
* :class:`ClusterSupervisor` runs N replicas + nginx with active health checks, crash
  restarts and zero-failure rolling restarts (``redline cluster``).
"""

import typing

from redline._lazy import lazy_exports as _lazy_exports

# Imported on first use (redline._lazy): ``redline serve`` starts without aiohttp / httpx.
if typing.TYPE_CHECKING:
    from redline.lb.cluster_options import ClusterOptions as ClusterOptions
    from redline.lb.cluster_options import HealthCheck as HealthCheck
    from redline.lb.nginx import NGINX_MISSING_HINT as NGINX_MISSING_HINT
    from redline.lb.nginx import NginxMaster as NginxMaster
    from redline.lb.nginx import check_nginx_conf as check_nginx_conf
    from redline.lb.nginx import find_nginx as find_nginx
    from redline.lb.options import NginxOptions as NginxOptions
    from redline.lb.options import RateLimit as RateLimit
    from redline.lb.options import Strategy as Strategy
    from redline.lb.options import UpstreamServer as UpstreamServer
    from redline.lb.options import make_rate_limit as make_rate_limit
    from redline.lb.render import render_nginx_conf as render_nginx_conf
    from redline.lb.replica import Replica as Replica
    from redline.lb.replica import ReplicaCommand as ReplicaCommand
    from redline.lb.replica import ReplicaState as ReplicaState
    from redline.lb.replica import serve_command as serve_command
    from redline.lb.status import ClusterStatus as ClusterStatus
    from redline.lb.status import ReplicaStatus as ReplicaStatus
    from redline.lb.status import read_status as read_status
    from redline.lb.supervisor import ClusterSupervisor as ClusterSupervisor

__all__, __getattr__, __dir__ = _lazy_exports(__name__)

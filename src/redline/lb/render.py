"""Render a complete nginx.conf for redline replicas from :class:`~redline.lb.NginxOptions`.

The text comes from the Jinja2 template ``redline/lb/templates/nginx.conf.j2`` shipped as
package data (found with :mod:`importlib.resources`)::

    >>> from redline.lb import NginxOptions, UpstreamServer, render_nginx_conf
    >>> conf = render_nginx_conf(NginxOptions(servers=(UpstreamServer("127.0.0.1", 8001),)))
    >>> "server 127.0.0.1:8001" in conf
    True
"""

from __future__ import annotations

import functools
from importlib import resources

import jinja2

from redline.lb.options import NginxOptions

__all__ = ["render_nginx_conf"]

_TEMPLATE = "nginx.conf.j2"


def render_nginx_conf(options: NginxOptions) -> str:
    """Return the nginx.conf text for *options* (already validated by ``NginxOptions``).

    Write it to a run directory and start nginx with ``nginx -p RUN_DIR -c RUN_DIR/nginx.conf``;
    nothing in it refers to the system's ``/etc/nginx``.
    """
    if not isinstance(options, NginxOptions):
        raise TypeError(f"options must be NginxOptions, got {type(options).__name__}")
    limit_req = ""
    if options.rate_limit is not None:
        rl = options.rate_limit
        limit_req = f"            limit_req zone=redline_rate burst={rl.burst}"
        limit_req += " nodelay;\n" if rl.nodelay else ";\n"
    return _template().render(o=options, limit_req=limit_req)


def _duration(seconds: float) -> str:
    """nginx time literal: whole seconds as ``10s``, anything finer as ``250ms``."""
    if float(seconds).is_integer():
        return f"{int(seconds)}s"
    return f"{round(seconds * 1000)}ms"


@functools.cache
def _template() -> jinja2.Template:
    """Load the template once from package data."""
    source = resources.files("redline.lb").joinpath("templates", _TEMPLATE).read_text("utf-8")
    env = jinja2.Environment(
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=True,
        undefined=jinja2.StrictUndefined,
        autoescape=False,  # nginx config, not HTML
    )
    env.filters["duration"] = _duration
    return env.from_string(source)

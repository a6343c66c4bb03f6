"""``trivial-httpd``: serve a directory (a repository) over HTTP, with ostree's options."""

from __future__ import annotations

import argparse
from collections.abc import Callable
from typing import Any


def _int_between(low: int, high: int, what: str) -> Callable[[str], int]:
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"invalid {what}: {text!r}") from None
        if not low <= value <= high:
            raise argparse.ArgumentTypeError(f"invalid {what}: {value} "
                                             f"(must be {low} to {high})")
        return value

    return parse


def _key_value(text: str) -> tuple[str, str]:
    key, sep, value = text.partition("=")
    if not sep or not key:
        raise argparse.ArgumentTypeError(f"expected KEY=VALUE, got {text!r}")
    return key, value


def register(sub: Any) -> None:
    p = sub.add_parser(
        "trivial-httpd", help="Serve a directory (a repository) over HTTP.",
        description="A simple static HTTP server for DIR (default: the current directory), as "
        "ostree's trivial-httpd: GET and HEAD with Range, Last-Modified and ETag, directory "
        "listings, and hooks to test clients. Paths that leave DIR (.., symlinks pointing "
        "out) are refused. Without -d it runs until SIGTERM or SIGINT (exit 0), or until the "
        "process that started it ends.")
    p.add_argument("directory", nargs="?", default=".", metavar="DIR",
                   help="the directory to serve (default: the current directory)")
    p.add_argument("-d", "--daemonize", action="store_true",
                   help="fork into the background once listening")
    p.add_argument("--autoexit", action="store_true",
                   help="exit when DIR is deleted")
    p.add_argument("-P", "--port", type=_int_between(0, 65535, "port"), default=0,
                   metavar="PORT", help="the TCP port (default: 0, any free port)")
    p.add_argument("-p", "--port-file", metavar="PATH",
                   help="write the port number to PATH (- for standard output) once listening")
    p.add_argument("--log-file", metavar="PATH",
                   help="append a line per request to PATH (- for standard output)")
    p.add_argument("--force-range-requests", action="store_true",
                   help="send only the first half of files under /objects/ (then close), so "
                   "clients must resume with Range requests")
    p.add_argument("--require-basic-auth", action="store_true",
                   help="require user foouser, password barpw")
    percentage = _int_between(0, 99, "percentage")
    count = _int_between(0, 2**31 - 1, "count")
    p.add_argument("--random-500s", type=percentage, default=0, metavar="PERCENTAGE",
                   help="answer about PERCENTAGE %% of requests with HTTP 500")
    p.add_argument("--random-500s-max", type=count, default=100, metavar="MAX",
                   help="at most MAX such 500s (default: 100)")
    p.add_argument("--random-408s", type=percentage, default=0, metavar="PERCENTAGE",
                   help="answer about PERCENTAGE %% of requests with HTTP 408")
    p.add_argument("--random-408s-max", type=count, default=100, metavar="MAX",
                   help="at most MAX such 408s (default: 100)")
    p.add_argument("--expected-cookies", type=_key_value, action="append", default=[],
                   metavar="KEY=VALUE",
                   help="answer 403 unless the request has this cookie (repeatable)")
    p.add_argument("--expected-header", type=_key_value, action="append", default=[],
                   metavar="KEY=VALUE",
                   help="answer 403 unless the request has this header (repeatable)")
    p.set_defaults(func=cmd_trivial_httpd)


def cmd_trivial_httpd(args: argparse.Namespace) -> int:
    from ..httpd import HttpdConfig
    from ..trivialhttpd import ServeOptions, run_trivial_httpd

    config = HttpdConfig(
        force_range_requests=args.force_range_requests,
        require_basic_auth=args.require_basic_auth,
        random_500s=args.random_500s, random_500s_max=args.random_500s_max,
        random_408s=args.random_408s, random_408s_max=args.random_408s_max,
        expected_cookies=tuple(args.expected_cookies),
        expected_headers=tuple(args.expected_header))
    options = ServeOptions(directory=args.directory, port=args.port, port_file=args.port_file,
                           log_file=args.log_file, daemonize=args.daemonize,
                           autoexit=args.autoexit, end_with_parent=True)
    return run_trivial_httpd(options, config)

"""The service: one model shared by every app on a device, over Wyoming on a local socket (`edge-ser serve`).

protocol.py frames events with bounded sizes, session.py is one client's requests, server.py the sockets,
the scheduler and the signals. The C client that firmware links is in clients/c.
"""
from .protocol import Limits, ProtocolError
from .server import Service, ServiceError, parse_uri, run_service
from .session import DONE_EVENT, MODES, RESULT_EVENT

__all__ = ["DONE_EVENT", "Limits", "MODES", "ProtocolError", "RESULT_EVENT", "Service", "ServiceError", "parse_uri",
           "run_service"]

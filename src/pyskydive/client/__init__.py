"""The client side of the analyzer's API: :class:`Client` (REST, on httpx) and the
``skydive client`` command line (:mod:`pyskydive.client.cli`)."""

from pyskydive.client.api import RESOURCES, Client, ClientError

__all__ = ["RESOURCES", "Client", "ClientError"]

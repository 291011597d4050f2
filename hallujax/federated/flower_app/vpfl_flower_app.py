"""The Flower App's components: hallujax.federated.flower's ServerApp and ClientApp."""

from hallujax.federated.flower import client, server

__all__ = ["client", "server"]

"""``InMemoryHubLifetimeManager`` passes the lifetime manager conformance suite, and keeps its gauges."""

from __future__ import annotations

from service.hub import HubLifetimeManager, InMemoryHubLifetimeManager

from .lifetime_conformance import LifetimeManagerConformance


class TestInMemoryHubLifetimeManager(LifetimeManagerConformance):
    def make(self) -> HubLifetimeManager:
        return InMemoryHubLifetimeManager()

    def test_empty_groups_are_forgotten(self) -> None:
        manager = self.manager
        assert isinstance(manager, InMemoryHubLifetimeManager)
        a = self.connect(groups=("g", "h"))
        b = self.connect(groups=("g",))
        assert (manager.group_count, manager.group_size("g")) == (2, 2)
        manager.on_disconnected(a)
        assert (manager.group_count, manager.group_size("g"), manager.group_size("h")) == (1, 1, 0)
        manager.remove_from_group(b.connection_id, "g")
        assert manager.group_count == 0
        assert len(manager) == 1

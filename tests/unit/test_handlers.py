"""The operator's kopf handlers are top-level functions, registered by one small ``register()``."""

from __future__ import annotations

import pytest

from eventferry.controller import handlers

pytestmark = pytest.mark.unit


def test_register_files_every_handler_once_per_resource() -> None:
    registry = handlers.register()
    ids = sorted(h.id for h in registry._indexing.get_all_handlers())
    assert ids == ["broker_index", "configmap_index", "dataplane_index", "endpointslice_index", "eventpolicy_index",
                   "kafkasource_index", "rocketmqsource_index", "service_index", "trigger_index"]
    # ConfigMaps are watched by label only: the operator's own and the Brokers' configs, never all of them.
    configmaps = [h for h in [*registry._indexing.get_all_handlers(), *registry._watching.get_all_handlers()]
                  if h.selector is not None and h.selector.any_name == "configmaps"]
    assert len(configmaps) == 3 and all(h.labels == {"eventferry.dev/watched": "true"} for h in configmaps)
    watching = sorted(h.id for h in registry._watching.get_all_handlers())
    assert watching.count("source_event") == 2  # one per source kind
    assert {"broker_event", "trigger_event", "service_event", "configmap_event", "deployment_event",
            "endpointslice_event", "eventpolicy_event"} <= set(watching)
    changing = sorted(h.id for h in registry._changing.get_all_handlers())
    assert changing.count("source_created") == 2 and "broker_topics" in changing


def test_the_dataplane_status_filter_reads_the_system_namespace_from_the_context() -> None:
    import kopf

    class Config:
        system_namespace = "eventferry-system"

    class Ctx:
        config = Config()

    memo = kopf.Memo(ctx=Ctx())
    assert handlers.is_dataplane_status(memo, "eventferry-system", "eventferry-dataplane-status")
    assert not handlers.is_dataplane_status(memo, "other", "eventferry-dataplane-status")
    assert not handlers.is_dataplane_status(memo, "eventferry-system", "something-else")



def test_the_api_server_sends_only_the_configmaps_the_operator_reads() -> None:
    import kopf

    from eventferry.controller.config import OperatorConfig

    settings = kopf.OperatorSettings()
    handlers.configure(settings, OperatorConfig())
    [configmaps] = [selector for selector in settings.watching.label_selectors if selector.any_name == "configmaps"]
    assert settings.watching.label_selectors[configmaps] == "eventferry.dev/watched=true"

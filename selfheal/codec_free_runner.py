"""A workflow runner that skips the SDK's per-payload trip into the sandbox when no codec needs it.

Before it encodes or decodes a workflow task's payloads with the payload codec or external
storage, the SDK (temporalio 1.35) asks the workflow instance for the serialization
context of each payload sequence, three or four times per sequence per task. A sandboxed
instance answers by ``exec``-ing code inside its sandbox: about 70 microseconds a call
here, holding the GIL (py-spy under a fleet storm put a quarter of the ``selfheal dev``
process's interpreter samples there; measured as CPU, the storm's process used 82 ms per
incident with this runner against 87 ms without, one run each: bench/fleet_storm.py,
docs/development/benchmarks.md). The context only chooses a codec and an external
store for the payloads. selfheal's data converter has neither (``selfheal.connection``:
pydantic's, no codec), so every context leads to the same no-op, and this runner answers
"no context" without entering the sandbox. Everything else (activation, the workflow's
own conversions, the sandbox's restrictions) is the wrapped runner's, unchanged.

``for_converter`` wraps only when the worker's converter has no codec and no external
storage: a deployment that adds an encrypting codec gets the SDK's own path back.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import temporalio.workflow
from temporalio.converter import DataConverter, SerializationContext, StorageDriverStoreContext
from temporalio.worker import WorkflowInstance, WorkflowInstanceDetails, WorkflowRunner


NO_STORE = StorageDriverStoreContext(target=None)


@dataclass(frozen=True)
class CodecFreeRunner(WorkflowRunner):
    inner: WorkflowRunner

    @classmethod
    def for_converter(cls, converter: DataConverter, inner: WorkflowRunner) -> WorkflowRunner:
        """``inner`` wrapped, unless ``converter`` (the worker's client's) has a codec or a store."""
        if converter.payload_codec is not None or converter.external_storage is not None:
            return inner
        return cls(inner)

    def prepare_workflow(self, defn: temporalio.workflow._Definition) -> None:
        self.inner.prepare_workflow(defn)

    def create_instance(self, det: WorkflowInstanceDetails) -> WorkflowInstance:
        return _CodecFreeInstance(self.inner.create_instance(det))

    def set_worker_level_failure_exception_types(self, types: Sequence[type[BaseException]]) -> None:
        self.inner.set_worker_level_failure_exception_types(types)


class _CodecFreeInstance(WorkflowInstance):
    def __init__(self, inner: WorkflowInstance):
        self._inner = inner

    def activate(self, act):
        return self._inner.activate(act)

    def get_serialization_context(self, command_info) -> SerializationContext | None:
        return None  # no codec, no external storage: nothing reads it

    def get_external_store_context(self, command_info) -> StorageDriverStoreContext:
        return NO_STORE  # no external storage: nothing reads it

    def get_info(self) -> temporalio.workflow.Info:
        return self._inner.get_info()

    def get_thread_id(self) -> int | None:
        return self._inner.get_thread_id()  # the deadlock detector names the stuck thread

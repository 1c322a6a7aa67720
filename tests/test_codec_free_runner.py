"""The worker's runner skips the SDK's per-payload trip into the sandbox only where no codec
or external store could read the context it would have fetched (selfheal.codec_free_runner)."""

from __future__ import annotations

import dataclasses

from temporalio import workflow
from temporalio.api.common.v1 import Payload, Payloads
from temporalio.api.failure.v1 import Failure
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.converter import PayloadCodec, SerializationContext, WithSerializationContext
from temporalio.worker import WorkflowInstanceDetails
from temporalio.worker.workflow_sandbox._runner import _fake_info  # the SDK's own stand-in, as prepare_workflow uses

from selfheal.codec_free_runner import NO_STORE, CodecFreeRunner
from selfheal.worker import WORKFLOW_RUNNER
from selfheal.workflows.entry_governor import EntryGovernorWorkflow


class Encrypting(PayloadCodec, WithSerializationContext):
    """A codec that, like a real encrypting one, could key by workflow: it needs the context."""

    def __init__(self, context: SerializationContext | None = None):
        self.context = context

    def with_context(self, context: SerializationContext) -> "Encrypting":
        return Encrypting(context)

    async def encode(self, payloads: list[Payload]) -> list[Payload]:
        return list(payloads)

    async def decode(self, payloads: list[Payload]) -> list[Payload]:
        return list(payloads)


def test_selfheals_converter_gets_the_codec_free_runner():
    runner = CodecFreeRunner.for_converter(pydantic_data_converter, WORKFLOW_RUNNER)
    assert isinstance(runner, CodecFreeRunner) and runner.inner is WORKFLOW_RUNNER


def test_a_converter_with_a_codec_keeps_the_sdks_own_path():
    with_codec = dataclasses.replace(pydantic_data_converter, payload_codec=Encrypting())
    assert CodecFreeRunner.for_converter(with_codec, WORKFLOW_RUNNER) is WORKFLOW_RUNNER


async def test_the_codec_free_instance_answers_without_the_sandbox_and_delegates_the_rest():
    """A real sandboxed instance behind it: the context is None (no exec), the rest is the
    sandbox's (replaying every recorded history with it is tests/workflows/test_replay.py)."""
    det = WorkflowInstanceDetails(
        payload_converter_factory=pydantic_data_converter._new_payload_converter,
        failure_converter_class=pydantic_data_converter.failure_converter_class, interceptor_classes=[],
        defn=workflow._Definition.must_from_class(EntryGovernorWorkflow), info=_fake_info, randomness_seed=-1,
        extern_functions={}, disable_eager_activity_execution=False, worker_level_failure_exception_types=[],
        patch_activation_callback=None, last_completion_result=Payloads(), last_failure=Failure())
    instance = CodecFreeRunner(WORKFLOW_RUNNER).create_instance(det)
    assert instance.get_serialization_context(None) is None and instance.get_external_store_context(None) is NO_STORE
    assert instance.get_info() is det.info and instance.get_thread_id() is None  # not in an activation

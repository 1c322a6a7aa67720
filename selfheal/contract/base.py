"""The base every contract model shares: unknown fields are refused, whoever sends them."""

from __future__ import annotations

from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field


class Model(BaseModel):
    model_config = ConfigDict(extra="forbid")


# What people type into a message for a workflow, bounded: a name, prose, a signed
# statement and its signature. A message over a bound is refused before any workflow
# decodes it, so no history or state grows with what someone chose to send.
PersonField = Annotated[str, Field(min_length=1, max_length=80)]
ProseField = Annotated[str, Field(max_length=2000)]
SignedField = Annotated[str, Field(max_length=8192)]

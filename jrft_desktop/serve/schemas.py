"""The request bodies the routes take, as OpenAI (and text-embeddings-inference for /predict) define them. Fields a
client commonly sends but this server cannot honour are refused when set (`unsupported`), never silently ignored;
other unknown fields are ignored, as OpenAI-compatible servers do."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field

from .errors import APIError

Text = Annotated[str, Field(max_length=1_000_000)]


class Loose(BaseModel):
    model_config = ConfigDict(extra="allow")


class ContentPart(Loose):
    type: str
    text: str | None = None


class ChatMessage(Loose):
    role: str
    content: Text | list[ContentPart] | None = None


class StreamOptions(Loose):
    include_usage: bool = False


class Sampling(Loose):
    """What every generating route reads."""

    model: str
    max_tokens: int | None = Field(None, ge=1)
    temperature: float | None = Field(None, ge=0, le=2)
    top_p: float | None = Field(None, gt=0, le=1)
    seed: int | None = Field(None, ge=0, le=2**63 - 1)
    repetition_penalty: float | None = Field(None, ge=1, le=10)  # vLLM's extension; omitted: `jrft predict`'s default
    stop: str | list[str] | None = None
    stream: bool = False
    stream_options: StreamOptions | None = None
    n: int = Field(1, ge=1)

    def stops(self) -> list[str]:
        stops = [self.stop] if isinstance(self.stop, str) else list(self.stop or [])
        if len(stops) > 4 or not all(stops):
            raise APIError(400, "'stop' takes up to 4 non-empty strings.", param="stop")
        return stops


class ChatRequest(Sampling):
    messages: list[ChatMessage] = Field(min_length=1)
    max_completion_tokens: int | None = Field(None, ge=1)


class CompletionRequest(Sampling):
    prompt: Text | list[Text]
    max_tokens: int | None = Field(16, ge=1)  # OpenAI's default for completions


class PredictRequest(Loose):
    model: str
    inputs: Text | list[Text | list[Text]] = Field(min_length=1)


class EmbeddingRequest(Loose):
    model: str
    input: Text | list[Text] = Field(min_length=1)
    encoding_format: Literal["float", "base64"] = "float"


class VectorRequest(Loose):
    path: str
    name: str | None = None


# (field, the value that means "not used"): what this server does not do, refused with its reason when set
NOT_DONE = {"n": (1, "one answer per request"), "logprobs": (None, "no log probabilities"),
            "top_logprobs": (None, "no log probabilities"), "echo": (False, "no echo of the prompt"),
            "presence_penalty": (0, "no presence penalty"), "frequency_penalty": (0, "no frequency penalty"),
            "logit_bias": (None, "no logit bias"), "tools": (None, "no tool calls"),
            "tool_choice": (None, "no tool calls"), "functions": (None, "no function calls"),
            "best_of": (1, "one answer per request"), "suffix": (None, "no suffix"),
            "dimensions": (None, "embeddings of the model's own size only")}


def unsupported(body: BaseModel) -> None:
    """Refuse a field set to something this server cannot do."""
    given = {**(body.model_extra or {}), **{name: getattr(body, name) for name in type(body).model_fields}}
    for name, (unused, reason) in NOT_DONE.items():
        value = given.get(name)
        if value is not None and value != unused and (value or unused == 1):  # an empty list or false is unused
            raise APIError(400, f"'{name}' is not supported by this server ({reason}).", param=name,
                           code="unsupported_parameter")
    response_format = given.get("response_format")
    if isinstance(response_format, dict) and response_format.get("type", "text") != "text":
        raise APIError(400, "'response_format' other than text is not supported by this server.",
                       param="response_format", code="unsupported_parameter")

"""Request and response models.

Request models carry the server's limits (texts per request, characters per text, top_k), so they are
built per app by :func:`make_schemas` from its :class:`~embedkit.server.settings.Settings`; ``/docs`` shows the
limits in force. Every text must be a real string with some non-whitespace character: no numbers,
no nulls, no token-id arrays.
"""

from dataclasses import dataclass
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, BeforeValidator, ConfigDict, Field, WithJsonSchema, model_validator
from pydantic_core import PydanticCustomError

from .settings import Settings

FILTER_FIELD = r"^[A-Za-z_][A-Za-z0-9_\-]*$"  # the document store's rule for metadata field names


def _scalar(v: Any) -> Any:
    if v is None or isinstance(v, (str, int, float, bool)):
        return v
    raise PydanticCustomError("filter_value", "filter values must be a string, number, boolean or null")


FilterValue = Annotated[Any, AfterValidator(_scalar),
                        WithJsonSchema({"type": ["string", "number", "boolean", "null"]})]


def _not_blank(v: str) -> str:
    if not v.strip():
        raise PydanticCustomError("blank_string", "must contain non-whitespace text")
    return v


def _one_or_many(v: Any) -> Any:
    """OpenAI-style input: a single string stands for a list of one."""
    if isinstance(v, str):
        return [v]
    if isinstance(v, list) and v and all(isinstance(x, (int, list)) and not isinstance(x, bool) for x in v):
        raise PydanticCustomError("token_input", "token-id arrays are not supported by this server; send text")
    return v


def text_type(max_chars: int):
    return Annotated[str, Field(strict=True, min_length=1, max_length=max_chars), AfterValidator(_not_blank)]


def texts_type(max_texts: int, max_chars: int, *, single_ok: bool):
    item = text_type(max_chars)
    if not single_ok:
        return Annotated[list[item], Field(min_length=1, max_length=max_texts)]
    schema = {"anyOf": [{"type": "string", "minLength": 1, "maxLength": max_chars},
                        {"type": "array", "items": {"type": "string", "minLength": 1, "maxLength": max_chars},
                         "minItems": 1, "maxItems": max_texts}]}
    return Annotated[list[item], BeforeValidator(_one_or_many), Field(min_length=1, max_length=max_texts),
                     WithJsonSchema(schema)]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


@dataclass(frozen=True)
class Schemas:
    SearchRequest: type[BaseModel]
    EncodeRequest: type[BaseModel]
    EmbeddingsRequest: type[BaseModel]
    DocumentIn: type[BaseModel]
    AddDocumentsRequest: type[BaseModel]


def make_schemas(s: Settings) -> Schemas:
    Text = text_type(s.max_chars)
    Texts = texts_type(s.max_texts, s.max_chars, single_ok=False)
    OneOrMany = texts_type(s.max_texts, s.max_chars, single_ok=True)
    Filter = Annotated[dict[Annotated[str, Field(pattern=FILTER_FIELD, max_length=64)], FilterValue],
                       Field(min_length=1, max_length=s.max_filter_fields)]

    class SearchRequest(_Strict):
        """One query (``query``) or several (``queries``); exactly one of the two."""
        query: Text | None = Field(None, description="A single query.", examples=["信用卡额度太低能调高吗"])
        queries: Texts | None = Field(None, description=f"Up to {s.max_texts} queries.")
        top_k: int = Field(10, strict=True, ge=1, le=s.max_top_k,
                           description="Hits per query (an index with fewer documents returns them all).")
        min_score: float | None = Field(None, allow_inf_nan=False, description="Drop hits scoring below this.")
        filter: Filter | None = Field(None, description="Metadata equality filter, e.g. {\"topic\": \"快递物流\"}.")

        @model_validator(mode="after")
        def _exactly_one(self):
            if (self.query is None) == (self.queries is None):
                raise PydanticCustomError("query_or_queries", "give exactly one of 'query' and 'queries'")
            return self

    class EncodeRequest(_Strict):
        texts: OneOrMany = Field(description=f"A string or up to {s.max_texts} strings.")
        reduce: bool = Field(True, strict=True, description="Apply the index's reducer (the vectors search uses).")
        normalize: bool | None = Field(None, strict=True,
                                       description="L2-normalise (default: as the index's metric does).")

    class EmbeddingsRequest(BaseModel):
        """OpenAI's embeddings request. ``model`` is accepted and echoed as the served model's name."""
        model_config = ConfigDict(extra="ignore")
        input: OneOrMany = Field(description=f"A string or up to {s.max_texts} strings.")
        model: Annotated[str, Field(strict=True, max_length=256)] | None = None
        encoding_format: Literal["float", "base64"] = "float"
        dimensions: int | None = Field(None, strict=True, ge=1,
                                       description="Keep the first N components (re-normalised); at most "
                                                   "the index dimension.")
        user: Annotated[str, Field(strict=True, max_length=256)] | None = None

    class DocumentIn(_Strict):
        id: Annotated[str, Field(strict=True, min_length=1, max_length=256), AfterValidator(_not_blank)]
        text: Text
        metadata: dict[str, Any] | None = None

    class AddDocumentsRequest(_Strict):
        documents: Annotated[list[DocumentIn], Field(min_length=1, max_length=s.max_texts)]

    return Schemas(SearchRequest, EncodeRequest, EmbeddingsRequest, DocumentIn, AddDocumentsRequest)


# ------------------------------------------------------------------------------------------------
# responses (the same for every app)
# ------------------------------------------------------------------------------------------------
class ErrorDetail(BaseModel):
    type: str
    message: str


class ErrorResponse(BaseModel):
    error: ErrorDetail


class HitOut(BaseModel):
    id: str
    text: str
    score: float
    metadata: dict[str, Any] | None = None


class QueryResult(BaseModel):
    query: str
    hits: list[HitOut]


class SearchResponse(BaseModel):
    results: list[QueryResult]
    count: int = Field(description="Documents in the index when it was searched.")
    took_ms: float


class EncodeResponse(BaseModel):
    embeddings: list[list[float]]
    dim: int
    reduced: bool
    normalized: bool
    model: str


class EmbeddingItem(BaseModel):
    object: Literal["embedding"] = "embedding"
    embedding: list[float] | str
    index: int


class Usage(BaseModel):
    prompt_tokens: int
    total_tokens: int


class EmbeddingsResponse(BaseModel):
    object: Literal["list"] = "list"
    data: list[EmbeddingItem]
    model: str
    usage: Usage


class ModelCard(BaseModel):
    id: str
    object: Literal["model"] = "model"
    created: int
    owned_by: str


class ModelList(BaseModel):
    object: Literal["list"] = "list"
    data: list[ModelCard]


class AddDocumentsResponse(BaseModel):
    added: int
    ids: list[str]
    count: int


class DeleteResponse(BaseModel):
    deleted: int
    id: str
    count: int


class HealthResponse(BaseModel):
    status: Literal["ok"]
    count: int


class InfoResponse(BaseModel):
    model: str
    served_model_name: str
    pooling: str
    max_length: int
    backend: str
    reducer: str
    dim: int
    encoder_dim: int
    metric: str
    index_type: str
    count: int
    generation: str
    embedkit_version: str
    settings: dict[str, Any]

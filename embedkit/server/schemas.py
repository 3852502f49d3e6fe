"""Request and response models.

Request models carry the server's limits (texts per request, characters per text, top_k), so they are
built per app by :func:`make_schemas` from its :class:`~embedkit.server.settings.Settings`; ``/docs`` shows the
limits in force. Every text must be a real string with some non-whitespace character: no numbers,
no nulls, no token-id arrays.

Every rule the server enforces is stated in the published schema (the API accepts exactly what its
OpenAPI document says): non-blank text is ``pattern: \\S``, "exactly one of query/queries" is a
``oneOf``, integers are JSON Schema integers (``4.0`` is one, so it is accepted as 4).
"""

import math
import re
from dataclasses import dataclass
from typing import Annotated, Any, Literal, Union

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    WithJsonSchema,
    model_validator,
)
from pydantic_core import PydanticCustomError
from typing_extensions import TypeAliasType

from embedkit.validate import INT64_MAX, INT64_MIN

from .settings import Settings

FILTER_FIELD = r"^[A-Za-z_][A-Za-z0-9_\-]*$"  # the document store's rule for metadata field names


#: JSON numbers in metadata and filters: what SQLite's JSON functions and the answers' serializer hold
#: exactly (64-bit integers); a float outside that range is refused as well, so the published schema can
#: state one range for every number.
NUMBER_RANGE = {"minimum": INT64_MIN, "maximum": INT64_MAX}
#: |min_score| at most this: cosines lie in -1..1 and BM25 or fused scores far below it; a bound the
#: schema can state, so an over-long integer is refused as documented.
MAX_SCORE = 1e9


def _number_in_range(what: str, v: Any) -> None:
    if isinstance(v, float) and not math.isfinite(v):
        raise PydanticCustomError("number_finite", "{what} is {value}; JSON numbers must be finite (NaN and "
                                  "Infinity are not JSON)", {"what": what, "value": str(v)})
    if isinstance(v, (int, float)) and not isinstance(v, bool) and not INT64_MIN <= v <= INT64_MAX:
        raise PydanticCustomError("number_range", "{what} is {value}, outside the 64-bit integer range of metadata numbers "
                                  "({lo} .. {hi}); store it as a string",
                                  {"what": what, "value": str(v)[:40], "lo": INT64_MIN, "hi": INT64_MAX})


def _scalar(v: Any) -> Any:
    if v is None or isinstance(v, (str, int, float, bool)):
        _number_in_range("the filter value", v)
        return v
    raise PydanticCustomError("filter_value", "filter values must be a string, number, boolean or null")


FilterValue = Annotated[Any, AfterValidator(_scalar),
                        WithJsonSchema({"anyOf": [{"type": ["string", "boolean", "null"]},
                                                  {"type": "number", **NUMBER_RANGE}]})]

#: A metadata value: JSON with every number in :data:`NUMBER_RANGE` (the schema states it; the
#: validator before it names the offending field in plain words).
MetadataValue = TypeAliasType("MetadataValue", Union[  # noqa: UP007 - a recursive alias needs Union here
    None, Annotated[bool, Field(strict=True)], Annotated[str, Field(strict=True)],
    Annotated[int, Field(strict=True, ge=INT64_MIN, le=INT64_MAX)],
    Annotated[float, Field(strict=True, ge=INT64_MIN, le=INT64_MAX, allow_inf_nan=False)],
    list["MetadataValue"], dict[str, "MetadataValue"]])


def _metadata_rules(v: Any) -> Any:
    """Name the field of a metadata number out of range (or not finite) before the union's own errors."""
    def walk(path: str, x: Any) -> None:
        if isinstance(x, dict):
            for k, item in x.items():
                walk(f"{path}.{k}" if path else str(k), item)
        elif isinstance(x, list):
            for i, item in enumerate(x):
                walk(f"{path}[{i}]", item)
        elif isinstance(x, float) and not math.isfinite(x):
            raise PydanticCustomError("number_finite", "metadata field '{field}' is {value}; metadata numbers "
                                      "must be finite", {"field": path, "value": str(x)})
        else:
            _number_in_range(f"metadata field {path!r}", x)

    if isinstance(v, dict):
        walk("", v)
    return v


Metadata = Annotated[dict[str, MetadataValue] | None, BeforeValidator(_metadata_rules)]


# "Some character that is not whitespace", whitespace as Python's str.isspace() knows it, written out
# so that JSON Schema's (ECMA 262) regex engine and Python's read the published pattern alike (their \\s
# differ: ECMA's lacks U+001C..U+001F and U+0085, and has U+FEFF). The check below uses this very regex.
NOT_BLANK = r"[^\t\n\x0b\x0c\r\x1c-\x1f \x85\xa0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000]"
_NOT_BLANK_RE = re.compile(NOT_BLANK)


def _not_blank(v: str) -> str:
    if _NOT_BLANK_RE.search(v) is None:
        raise PydanticCustomError("blank_string", "must contain non-whitespace text")
    return v


def _integral(v: Any) -> Any:
    """JSON Schema's ``integer`` includes numbers with a zero fraction (``4.0``); pass them on as ints.
    Everything else (strings, booleans, 2.5) reaches the strict int check and is refused there."""
    if isinstance(v, float) and v.is_integer():
        return int(v)
    return v


def int_type(**constraints):
    """A strict JSON integer (no strings, no booleans, no fractions) that accepts ``4.0`` as 4."""
    return Annotated[int, Field(strict=True, **constraints), BeforeValidator(_integral)]


def _one_or_many(v: Any) -> Any:
    """OpenAI-style input: a single string stands for a list of one."""
    if isinstance(v, str):
        return [v]
    if isinstance(v, list) and v and all(isinstance(x, (int, list)) and not isinstance(x, bool) for x in v):
        raise PydanticCustomError("token_input", "token-id arrays are not supported by this server; send text")
    return v


def text_type(max_chars: int):
    return Annotated[str, Field(strict=True, min_length=1, max_length=max_chars,
                                json_schema_extra={"pattern": NOT_BLANK}), AfterValidator(_not_blank)]


def texts_type(max_texts: int, max_chars: int, *, single_ok: bool):
    item = text_type(max_chars)
    if not single_ok:
        return Annotated[list[item], Field(min_length=1, max_length=max_texts)]
    one = {"type": "string", "minLength": 1, "maxLength": max_chars, "pattern": NOT_BLANK}
    schema = {"anyOf": [one, {"type": "array", "items": one, "minItems": 1, "maxItems": max_texts}]}
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
    SimilarityRequest: type[BaseModel]


def make_schemas(s: Settings) -> Schemas:
    Text = text_type(s.max_chars)
    Texts = texts_type(s.max_texts, s.max_chars, single_ok=False)
    OneOrMany = texts_type(s.max_texts, s.max_chars, single_ok=True)
    Filter = Annotated[dict[Annotated[str, Field(pattern=FILTER_FIELD, max_length=64)], FilterValue],
                       Field(min_length=1, max_length=s.max_filter_fields),
                       WithJsonSchema({"type": "object", "propertyNames": {"pattern": FILTER_FIELD, "maxLength": 64},
                                       "additionalProperties": {"type": ["string", "number", "boolean", "null"]},
                                       "minProperties": 1, "maxProperties": s.max_filter_fields})]

    class SearchRequest(_Strict):
        """One query (``query``) or several (``queries``); exactly one of the two."""
        model_config = ConfigDict(extra="forbid", json_schema_extra={"oneOf": [
            {"required": ["query"], "properties": {"query": {"type": "string"}}},
            {"required": ["queries"], "properties": {"queries": {"type": "array"}}}]})
        query: Text | None = Field(None, description="A single query.", examples=["信用卡额度太低能调高吗"])
        queries: Texts | None = Field(None, description=f"Up to {s.max_texts} queries.")
        top_k: int_type(ge=1, le=s.max_top_k) = Field(
            10, description="Hits per query (an index with fewer documents returns them all).")
        min_score: float | None = Field(None, strict=True, allow_inf_nan=False, ge=-MAX_SCORE, le=MAX_SCORE,
                                        description="Drop hits scoring below this (cosine, BM25 or fused score).")
        filter: Filter | None = Field(None, description="Metadata equality filter, e.g. {\"topic\": \"快递物流\"}.")
        mode: Literal["dense", "lexical", "hybrid"] = Field(
            "dense", description="dense (vectors), lexical (BM25 over Chinese words) or hybrid (both, fused with the "
                                 "index's tuned weight). lexical/hybrid need an index with a lexical part.")
        min_probability: float | None = Field(
            None, strict=True, ge=0, le=1, allow_inf_nan=False,
            description="Drop hits whose calibrated P(similar) is below this (dense mode, calibrated index).")
        unit: Literal["documents", "passages"] = Field(
            "documents", description="documents: each document once, ranked by its best passage (named in "
                                     "`passage`); passages: the top passages themselves (dense mode, an index "
                                     "built with passages), several may come from one document.")

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
        dimensions: int_type(ge=1) | None = Field(
            None, description="Keep the first N components (re-normalised); at most the index dimension "
                              "(the schema's maximum, once the index is loaded).")
        user: Annotated[str, Field(strict=True, max_length=256)] | None = None

    class DocumentIn(_Strict):
        id: Annotated[str, Field(strict=True, min_length=1, max_length=256, json_schema_extra={"pattern": NOT_BLANK}),
                      AfterValidator(_not_blank)]
        text: text_type(s.max_document_chars)
        metadata: Metadata = None

    class AddDocumentsRequest(_Strict):
        documents: Annotated[list[DocumentIn], Field(
            min_length=1, max_length=s.max_texts,
            description="New documents. Ids must be new: an id already in the index, or given twice in "
                        "this request, is a conflict (409) and nothing is added.")]

    class SimilarityRequest(_Strict):
        """Pairs of texts to compare through the index's query path."""
        pairs: Annotated[list[tuple[Text, Text]], Field(min_length=1, max_length=max(1, s.max_texts // 2))] = Field(
            description=f"Up to {max(1, s.max_texts // 2)} pairs [a, b].", examples=[[["花呗怎么还款", "花呗如何还款"]]])

    return Schemas(SearchRequest, EncodeRequest, EmbeddingsRequest, DocumentIn, AddDocumentsRequest,
                   SimilarityRequest)


# ------------------------------------------------------------------------------------------------
# responses (the same for every app)
# ------------------------------------------------------------------------------------------------
class ErrorDetail(BaseModel):
    type: str
    message: str


class ErrorResponse(BaseModel):
    error: ErrorDetail


class PassageOut(BaseModel):
    index: int = Field(description="Position of the passage in its document (0 = first).")
    start: int = Field(description="Character offset of the passage in the document text.")
    end: int = Field(description="Character offset just past the passage.")
    text: str


class HitOut(BaseModel):
    id: str
    text: str
    score: float
    metadata: dict[str, Any] | None = None
    probability: float | None = Field(None, description="Calibrated P(similar); only on a calibrated index.")
    match: bool | None = Field(None, description="Whether the pair is more likely than not the same: calibrated "
                                                 "P(similar) >= 0.5 (the index's calibration may instead use the "
                                                 "F1- or accuracy-maximising score cut); with probability.")
    passage: PassageOut | None = Field(None, description="The passage that scored, for a document read as several "
                                                         "passages (always with unit=passages): for highlighting, "
                                                         "`text[start:end]` of the document.")


class PairScore(BaseModel):
    score: float
    probability: float | None = Field(None, description="Calibrated P(similar); null on an uncalibrated index.")
    match: bool | None = Field(None, description="Whether the pair is more likely than not the same: calibrated "
                                                 "P(similar) >= 0.5 (the index's calibration may instead use the "
                                                 "F1- or accuracy-maximising score cut); null when uncalibrated.")


class SimilarityResponse(BaseModel):
    results: list[PairScore]
    calibrated: bool
    model: str


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
    auto: dict[str, Any] | None = Field(
        None, description="With --backend auto: the runtime chosen on this machine, whether the decision was "
                          "cached, and the measured table it was chosen from (sentences/s, min cosine and "
                          "Spearman change against fp32, or why a runtime was skipped).")

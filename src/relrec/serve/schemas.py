"""Request and response models of the HTTP API (pydantic): requests are validated with them;
responses are documented with them in OpenAPI but sent as ready JSON bytes (not re-validated)."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field

ItemId = Annotated[str, Field(min_length=1, max_length=256)]
RunName = Literal["main", "compare"]


class Reasons(BaseModel):
    shared_topics: list[str]
    text_similarity: float | None
    co_engagement_count: int


class RelatedEntry(BaseModel):
    rank: int
    item_id: str
    title: str
    score: float
    topics: list[str]
    image_url: str | None
    reasons: Reasons


class RelatedList(BaseModel):
    item_id: str | None = None
    title: str | None = None
    run: str
    model_version: str
    mode: str
    k: int
    items: list[RelatedEntry]
    notes: list[str] = []


class BatchResponse(BaseModel):
    run: str
    model_version: str
    results: list[RelatedList]


class UpNextRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    items: list[ItemId] = Field(..., min_length=1, description="recent items, most recent last")
    k: int = Field(10, ge=1)
    alpha: float | None = Field(None, ge=0.0, le=1.0, allow_inf_nan=False)
    diversify: bool = False
    exclude: list[ItemId] = []
    run: RunName = "main"


class BatchRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    item_ids: list[ItemId] = Field(..., min_length=1)
    k: int = Field(10, ge=1)
    alpha: float | None = Field(None, ge=0.0, le=1.0, allow_inf_nan=False)
    diversify: bool = False
    exclude: list[ItemId] = []
    run: RunName = "main"
    mode: Literal["auto", "exact"] = "auto"


class ContentRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    title: str = Field(..., min_length=1, max_length=1000)
    description: str | None = Field(None, max_length=20000)
    tags: list[Annotated[str, Field(max_length=200)]] = Field([], max_length=100)
    image: str | None = Field(None, max_length=4096, description=(
        "refused (422): the server never reads a path a client names; use image_base64 or "
        "image_item_id"))
    image_base64: str | None = Field(None, min_length=1, description=(
        "the new item's image file, base64-encoded (a data: URL prefix is accepted); the "
        "request body limit applies"))
    image_item_id: ItemId | None = Field(None, description="use this catalogue item's image")
    k: int = Field(10, ge=1)
    exclude: list[ItemId] = []
    run: RunName = "main"


class NewItem(BaseModel):
    model_config = ConfigDict(extra="forbid")
    item_id: ItemId
    title: str = Field(..., min_length=1, max_length=1000)
    description: str | None = Field(None, max_length=20000)
    tags: list[Annotated[str, Field(max_length=200)]] = Field([], max_length=100)
    topics: list[Annotated[str, Field(max_length=200)]] = Field([], max_length=100,
                                                                description="display only")
    available: bool = True


class NewItemsRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    items: list[NewItem] = Field(..., min_length=1)
    run: RunName | Literal["all"] = "all"


class AvailabilityRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    item_ids: list[ItemId] = Field(..., min_length=1)
    available: bool


class ErrorBody(BaseModel):
    code: str
    message: str


class ErrorResponse(BaseModel):
    error: ErrorBody

"""`phr serve`'s HTTP contract: pydantic models of every request and answer.

FastAPI writes the OpenAPI document from these models, and the server validates with the
same ones, so the constraints a client reads (`user` non-empty, `top` ≥ 1) are those the
server checks. A clip request comes in one of two bodies, a multipart upload (`clip`, a
file) or JSON (`path`, under --media-root), both carrying the same other fields: a route
names those fields as one model (`RecommendFields`; a route that takes other fields gives
its own subclass of `ClipFields`) and `clip_request_body` documents both bodies.
"""

from __future__ import annotations

import time
from functools import cache
from typing import Annotated, Any, Literal, TypeVar, cast

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, create_model

from phr_cli.data.posts import parse_time, split_hashtag_field
from phr_cli.data.statuses import Status

DEFAULT_TOP = 10  # suggestions when a request does not say


class ErrorMessage(BaseModel):
    """A refused request: one line naming the field, the file or the limit, and the cause."""

    error: str


class ClipFields(BaseModel):
    """The fields every clip request carries beside its clip (the upload or the JSON path)."""

    # Unknown fields are ignored, as a form's extra inputs are.
    model_config = ConfigDict(extra="ignore")

    user: str = Field(min_length=1, description="Who posts the clip: a user the model knows is answered "
                      "personally, any other (or only spaces) for an average user.")
    caption: str = Field("", description="The post's text; hashtags already in it are not suggested.")


def _whole(value: Any) -> Any:
    return int(value) if isinstance(value, float) and value.is_integer() else value


# JSON Schema's integer, which 5.0 is too; JSON bodies are validated strictly, which would refuse it.
WholeNumber = Annotated[int, BeforeValidator(_whole)]


class RecommendFields(ClipFields):
    top: WholeNumber = Field(DEFAULT_TOP, ge=1, description="How many hashtags; more than the model has gives all.")


def _hashtags(value: Any) -> Any:
    """A list (JSON) or space- or comma-separated text (a form), normalised as a manifest's are."""
    return split_hashtag_field(value) if isinstance(value, (str, list)) else value


def _time(value: Any) -> Any:
    """Unix seconds or ISO 8601 text, as a manifest's `time`; none given: now."""
    if value is None or value == "":
        return time.time()
    try:
        return parse_time(value)
    except (TypeError, ValueError):
        raise ValueError("give Unix seconds or ISO 8601 text (2026-12-07T10:00:00Z)") from None


class PostFields(ClipFields):
    """A post the user just published (`POST /posts`): the clip, its caption and the hashtags they chose."""

    hashtags: Annotated[list[str], BeforeValidator(_hashtags)] = Field(
        min_length=1, description="The hashtags the user chose: a list (JSON) or space- or comma-separated text "
        "(a form), each normalised as in a manifest (no '#', lower case).")
    time: Annotated[float, BeforeValidator(_time)] = Field(
        None, validate_default=True, description="When it was posted: Unix seconds or ISO 8601 text (default: now).")
    id: str | None = Field(None, min_length=1, max_length=200, description="The platform's id of the post: a post "
                           "sent again with the same id is not counted twice (default: a new id).")


class Posted(BaseModel):
    """A post recorded (durable in the journal) and in the user's history from the next request on."""

    id: str = Field(description="The post's id: the one given, or a new one.")
    sequence: int = Field(ge=1, description="Its place in the journal.")
    new: bool = Field(description="False: a post with this id was recorded before; it is counted once.")
    user: str
    hashtags: list[str] = Field(description="The hashtags recorded, normalised.")


POST_EXAMPLE = {"path": "beach.mp4", "user": "ana", "caption": "Morning swim", "hashtags": ["sea", "swim"],
                "id": "post-1"}

FieldsT = TypeVar("FieldsT", bound=ClipFields)


@cache
def json_body(fields: type[FieldsT]) -> type[FieldsT]:
    """The JSON body of a clip request: `fields` and the clip's `path` under --media-root."""
    return cast(type[FieldsT], create_model(
        f"{fields.__name__}Json", __base__=fields,
        path=(str, Field(min_length=1, description="A file under --media-root, relative to it."))))


@cache
def upload_body(fields: type[ClipFields]) -> type[ClipFields]:
    """The multipart body of a clip request, for the document only (the upload is streamed, not
    validated as a whole): `fields` and the `clip` file, each part given once."""
    return create_model(f"{fields.__name__}Upload", __base__=fields,
                        clip=(bytes, Field(description="The video file; its file name names it in answers.")))


def clip_request_body(fields: type[ClipFields], json_example: dict[str, Any]) -> dict[str, Any]:
    """The OpenAPI `requestBody` of a route reading a clip request with `fields` (`openapi_extra`)."""
    return {"requestBody": {"required": True, "content": {
        "multipart/form-data": {"schema": upload_body(fields).model_json_schema()},
        "application/json": {"schema": json_body(fields).model_json_schema(), "example": json_example},
    }}}


RECOMMEND_EXAMPLE = {"path": "beach.mp4", "user": "ana", "caption": "Morning swim #sea", "top": 5}


class Part(BaseModel):
    name: str = Field(description="A named part of the score (`PHRModel.score_parts`).")
    label: str = Field(description="Its name for a creator.")
    value: float
    share: float = Field(description="value / Σ|values|: signed; the shares' magnitudes sum to 1.")


class VideoEvidence(BaseModel):
    video: str = Field(description="The user's own post: its store path, or `text: <caption>`.")
    weight: float = Field(description="Attention α (the user's own videos) or cosine similarity (similar ones).")


class Because(BaseModel):
    """Why a hashtag was suggested. Fields may be added: clients should ignore those they do not know."""

    model_config = ConfigDict(extra="allow")

    parts: list[Part]
    uses: int = Field(ge=0, description="The user's posts with the hashtag.")
    last_used: float | None = Field(description="Unix seconds of the latest of them (null: none, or no time known).")
    own_videos: list[VideoEvidence] = Field(description="The user's training videos with it, by attention.")
    similar_videos: list[VideoEvidence] = Field(
        description="The user's own training videos with it, most similar to the clip first.")
    nearest: int = Field(ge=0, description="Training videos (anyone's) most similar to the clip looked at.")
    nearest_with_it: int = Field(ge=0, description="How many of those carry the hashtag (a count, never names).")
    sentences: list[str] = Field(description="The reasons in words, for the creator.")


class Suggestion(BaseModel):
    rank: int = Field(ge=1)
    hashtag: str
    score: float
    used_before: bool = Field(description="The user tagged a training post with it.")
    because: Because | None = Field(description="Null when the server has no store to explain from.")


class Recommendation(BaseModel):
    """One element of `phr recommend --json`, and the decoded clip's duration."""

    clip: str = Field(description="The clip as the request named it: the upload's file name, or the JSON path.")
    status: Status = Field(description="The decoder's status, or `stored` when the store's features were reused.")
    notices: list[str]
    user: str | None = Field(description="The user, normalised (null: none was left after trimming).")
    personalised: bool = Field(description="False: the model does not know the user; an average user's ranking.")
    suggestions: list[Suggestion]
    error: str | None = Field(description="Set (and the answer is a 422) when the clip gave nothing to rank from.")
    duration: float = Field(ge=0, description="Seconds of video decoded (0 for a stored clip).")


class UserHashtag(BaseModel):
    hashtag: str
    count: int | None = Field(description="The user's posts with it (null for a model without the count evidence).")


class UserHashtags(BaseModel):
    user: str
    known: bool = Field(description="Whether the model knows the user's posts: trained on, or published since.")
    hashtags: list[UserHashtag] = Field(description="The user's hashtags, training and published since, most used "
                                        "first.")


class Liveness(BaseModel):
    status: Literal["alive"] = "alive"


class Provenance(BaseModel):
    store: str | None = Field(description="The store trained on, as recorded; shown to loopback clients only.")
    encoders: dict[str, Any]
    sampling: dict[str, Any]
    posts_fingerprint: str


ReadinessStatus = Literal["ready", "loading", "failed"]


class Readiness(BaseModel):
    """Answered 200 once every encoder is loaded, 503 before (`loading`) or if one failed to (`failed`)."""

    status: ReadinessStatus
    checkpoint_sha256: str = Field(description="SHA-256 of the checkpoint file served.")
    checkpoint: str | None = Field(description="The checkpoint's path; shown to loopback clients only.")
    store: str | None = Field(description="The store read for features and reasons; loopback clients only.")
    device: str
    best_epoch: int
    users: int = Field(ge=0)
    hashtags: int = Field(ge=0)
    random_weights: bool = Field(description="The visual and acoustic encoders use seeded random weights.")
    explanations: str = Field(description="`available`, or why suggestions come without reasons.")
    provenance: Provenance

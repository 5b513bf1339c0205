"""`phr serve`'s HTTP contract: pydantic models of every request and answer.

FastAPI writes the OpenAPI document from these models, and the server validates with the
same ones, so the constraints a client reads (`user` non-empty, `top` ≥ 1) are those the
server checks. A clip request comes in one of two bodies, a multipart upload (`clip`, a
file) or JSON (`path`, under --media-root), both carrying the same other fields: a route
names those fields as one model (`RecommendFields`; a route that takes other fields gives
its own subclass of `ClipFields`) and `clip_request_body` documents both bodies.
"""

from __future__ import annotations

import re
import time
from functools import cache
from typing import Annotated, Any, ClassVar, Literal, TypeVar, cast

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, create_model

from phr_cli.data.posts import normalize_hashtag
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

    @classmethod
    def form_values(cls, form: dict[str, str]) -> dict[str, Any]:
        """A form's parts (all text) as the fields' values."""
        return form


def _whole(value: Any) -> Any:
    return int(value) if isinstance(value, float) and value.is_integer() else value


# JSON Schema's integer, which 5.0 is too; JSON bodies are validated strictly, which would refuse it.
WholeNumber = Annotated[int, BeforeValidator(_whole)]


class RecommendFields(ClipFields):
    top: WholeNumber = Field(DEFAULT_TOP, ge=1, description="How many hashtags; more than the model has gives all.")


def _hashtags(value: Any) -> Any:
    """Each hashtag normalised as a manifest's are; one with nothing left stays (empty), so that
    the items' pattern refuses it, as the schema does."""
    if isinstance(value, list) and all(isinstance(item, str) for item in value):
        return list(dict.fromkeys(normalize_hashtag(item) for item in value))
    return value  # not a list of text: refused as the schema says


# A hashtag as the schema can say it: something other than spaces and '#' (both are dropped).
Hashtag = Annotated[str, Field(pattern=r"[^\s#]")]


# Unix seconds as a form's text gives them.
SECONDS_TEXT = r"-?[0-9]+(\.[0-9]+)?"


def _time(value: Any) -> Any:
    """Unix seconds (a number, or a form's text of one); none given: now."""
    if value is None or value == "":
        return time.time()
    if isinstance(value, str):
        if not re.fullmatch(SECONDS_TEXT, value):
            raise ValueError("give Unix seconds (a number)")
        return float(value)
    return value


class PostFields(ClipFields):
    """A post the user just published (`POST /posts`): the clip, its caption and the hashtags they chose."""

    # A form's parts are text: there `hashtags` is one text of them (`form_fields`).
    form_fields: ClassVar[dict[str, Any]] = {
        "hashtags": (str, Field(pattern=r"[^\s,#]", description="The hashtags the user chose, space- or "
                                "comma-separated, each normalised as in a manifest (no '#', lower case).")),
        "time": (str, Field("", pattern=f"^({SECONDS_TEXT})?$", description="When it was posted, Unix seconds "
                            "(empty or absent: now)."))}

    hashtags: Annotated[list[Hashtag], BeforeValidator(_hashtags)] = Field(
        min_length=1, description="The hashtags the user chose, each normalised as in a manifest (no '#', lower "
        "case).")
    time: Annotated[float | None, BeforeValidator(_time)] = Field(
        None, validate_default=True, description="When it was posted, Unix seconds (null or absent: now).")
    @classmethod
    def form_values(cls, form: dict[str, str]) -> dict[str, Any]:
        """A form's `hashtags` is one text: space- or comma-separated (empty pieces dropped)."""
        text = form.get("hashtags")
        return form if text is None else {**form, "hashtags": [piece for piece in re.split(r"[\s,]+", text) if piece]}

    @property
    def posted_at(self) -> float:
        """`time` as validated: Unix seconds."""
        assert isinstance(self.time, float), "the validator makes every time Unix seconds"
        return self.time

    id: str | None = Field(None, min_length=1, max_length=200, description="The platform's id of the post: a post "
                           "sent again with the same id is not counted twice (default: a new id).")


class Posted(BaseModel):
    """A post recorded (durable in the journal) and in the user's history from the next request on."""

    id: str = Field(description="The post's id: the one given, or a new one.")
    sequence: int = Field(ge=1, description="Its place in the journal.")
    new: bool = Field(description="False: a post with this id was recorded before; it is counted once.")
    user: str
    hashtags: list[str] = Field(description="The hashtags recorded, normalised.")


class NothingToLearn(ErrorMessage):
    """A published post whose clip gave nothing to learn from (and no caption stood in)."""

    status: Status = Field(description="The decoder's verdict on the clip.")


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
                        clip=(bytes, Field(description="The video file; its file name names it in answers.")),
                        **getattr(fields, "form_fields", {}))


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

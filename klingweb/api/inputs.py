"""Turning an API request (the vendor's field names) into the create form of the page.

``POST /api/v1/tasks`` and ``POST /api/v1/elements`` have no validation of their own: the
request is mapped onto the Django form the create page uses (a family's
``TaskFamily.form_class``, the protocol of ``tasks_app.forms``; ``elements_app.forms.
ElementForm``) and that form decides, with the messages the page shows. This module only
reads the request (``request_fields``) and renames:

- a file input (``InputSpec.param``: ``image``, ``image_tail``, ``sound_file``,
  ``element_frontal_image``...) given as an ``http(s)://`` URL → the form's ``<name>_url``;
  given as Base64 (raw, or a ``data:<type>;base64,`` URL) → an upload in ``<name>_file``,
  checked by content like any upload; sent as a multipart file part of that name → the
  upload itself;
- ``watermark_info: {"enabled": bool}`` → the form's ``watermark`` box;
- any other key → the form field of that name (strings, numbers, booleans);
- an omitted field → the value the create page preselects (``Field.initial``).
- Elements (KLING_API.md §5.4): ``element_name``/``element_description``/
  ``element_voice_id`` → ``name``/``description``/``voice_id``; ``tag_list`` → ``tags``;
  ``element_image_list.frontal_image`` and ``.refer_images[].image_url``, and
  ``element_video_list.refer_videos[].video_url`` → the upload or URL fields of the form.

Two request shapes (``request_fields``): ``application/json`` (the vendor's body), and
``multipart/form-data`` where every text part is a field of the same name (a value that is
an object or a list in JSON — ``watermark_info``, ``element_image_list``,
``element_video_list``, ``tag_list`` — as JSON text; ``tag_list`` may also be repeated tag
ids) and file parts carry the files: named after the input (``image``, ``sound_file``...)
for tasks, ``frontal_image``, ``refer_images`` (1–3 parts) and ``refer_videos`` (1 part) for
elements.

A key the form does not know, ``external_task_id``/``callback_url`` (the portal sets them),
or a value of the wrong shape is refused with ``ApiError`` naming the field.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
from typing import Any

from django.core.exceptions import RequestDataTooBig, SuspiciousOperation
from django.core.files.uploadedfile import SimpleUploadedFile, UploadedFile
from django.http import HttpRequest, QueryDict
from django.http.multipartparser import MultiPartParserError
from django.utils.datastructures import MultiValueDict

from klingweb.api.errors import ApiError

#: Keys the portal fills in itself (KLING_API.md §5: every create body).
PORTAL_KEYS = frozenset({"external_task_id", "callback_url"})
#: Largest decoded Base64 input in bytes (the form's own limits are lower: 10 MB images,
#: 5 MB sound); the request body itself is capped by ``UPLOAD_MAX_REQUEST_BYTES``.
BASE64_MAX_BYTES = 20 * 1024 * 1024


def _decode_base64(value: str, *, field: str) -> bytes:
    text = value.strip()
    if text.startswith("data:"):
        head, _, text = text.partition(",")
        if ";base64" not in head:
            raise ApiError(400, "invalid", f"{field}: a data: URL must be Base64.", field=field)
    if len(text) > BASE64_MAX_BYTES * 4 // 3 + 8:
        raise ApiError(400, "too_large", f"{field} is larger than 20 MB.", field=field)
    try:
        raw = base64.b64decode("".join(text.split()), validate=True)
    except (binascii.Error, ValueError):
        raw = b""
    if not raw:
        raise ApiError(
            400,
            "invalid",
            f"{field} must be an http(s) URL or Base64-encoded file content.",
            field=field,
        )
    return raw


def _scalar(value: Any, *, field: str) -> str | None:
    """The form value of a JSON scalar: text; True → "on", False/None → absent."""
    if value is None or value is False:
        return None
    if value is True:
        return "on"
    if isinstance(value, str | int | float):
        return str(value)
    raise ApiError(400, "invalid", f"{field} must be a string, number or boolean.", field=field)


#: Keys whose JSON value is an object or a list; in a multipart request their text part
#: holds that JSON.
JSON_TEXT_KEYS = frozenset({"watermark_info", "element_image_list", "element_video_list"})
#: Media types of the two request shapes.
JSON_TYPE = "application/json"
MULTIPART_TYPE = "multipart/form-data"


def request_fields(request: HttpRequest) -> tuple[dict, MultiValueDict]:
    """``(body, files)`` of a create request: the JSON object of an ``application/json``
    body (``files`` empty), or for ``multipart/form-data`` the text parts as a dict (a part
    given several times → a list; the ``JSON_TEXT_KEYS`` parts decoded from JSON) and the
    file parts (``request.FILES``). Raises ``ApiError`` 400 for another media type, a body
    that is not a JSON object, JSON text that does not parse, or a malformed multipart
    body; 413 for a JSON body over ``DATA_UPLOAD_MAX_MEMORY_SIZE`` (15 MB: send large files
    as multipart parts instead)."""
    media_type = (request.content_type or "").lower()
    try:
        if media_type == MULTIPART_TYPE:
            post, files = request.POST, request.FILES
        elif media_type in (JSON_TYPE, "", "text/plain"):
            try:
                body = json.loads(request.body)
            except ValueError:
                body = None
            if not isinstance(body, dict):
                raise ApiError(400, "invalid", "The body must be a JSON object.")
            return body, MultiValueDict()
        else:
            raise ApiError(
                400,
                "unsupported_media_type",
                f"Send {JSON_TYPE} or {MULTIPART_TYPE}, not {media_type}.",
            )
    except RequestDataTooBig:
        raise ApiError(
            413,
            "too_large",
            "The JSON body is larger than 15 MB; send large files as multipart/form-data parts.",
        ) from None
    except (MultiPartParserError, SuspiciousOperation, UnicodeDecodeError) as exc:
        raise ApiError(400, "invalid", f"The multipart body cannot be read: {exc}") from None
    body: dict[str, Any] = {}
    for key in post:
        values = post.getlist(key)
        value: Any = values[0] if len(values) == 1 else values
        if key in JSON_TEXT_KEYS and isinstance(value, str):
            try:
                value = json.loads(value)
            except ValueError:
                raise ApiError(400, "invalid", f"{key} must be JSON text.", field=key) from None
        body[key] = value
    return body, files


def request_digest(marker: str, body: dict, files: MultiValueDict) -> str:
    """SHA-256 (hex) of a create request, for ``Idempotency-Key``: the endpoint ``marker``,
    the body (keys sorted) and the SHA-256 of every file part's content."""
    uploads = {name: [_file_sha256(item) for item in files.getlist(name)] for name in sorted(files)}
    canonical = json.dumps(
        {"$endpoint": marker, "body": body, "files": uploads},
        sort_keys=True,
        separators=(",", ":"),
        default=str,
    )
    return hashlib.sha256(canonical.encode("utf-8")).hexdigest()


def _file_sha256(upload: UploadedFile) -> str:
    digest = hashlib.sha256()
    for chunk in upload.chunks():
        digest.update(chunk)
    upload.seek(0)
    return digest.hexdigest()


def _one(value: Any, *, field: str) -> Any:
    """A single value (a list of texts, e.g. a repeated multipart text part, is refused)."""
    if isinstance(value, list) and value and all(isinstance(v, str) for v in value):
        raise ApiError(400, "invalid", f"{field} must be a single value.", field=field)
    return value


def _file_parts(files: MultiValueDict, key: str) -> list[UploadedFile]:
    return [f for f in files.getlist(key) if isinstance(f, UploadedFile)]


def form_from_body(
    family: Any,
    body: dict,
    *,
    team: Any,
    user: Any,
    uploads: MultiValueDict | None = None,
) -> tuple[Any, dict[str, str]]:
    """The bound create form of ``family`` for request ``body`` (without ``family``) and
    multipart file parts ``uploads`` (named after the inputs' params), and the map from
    form field names back to the body's field names (for error messages).

    Raises ``ApiError`` (400) for unknown keys, portal-set keys and badly shaped values.
    """
    form_class = family.get_form_class()
    specs = {spec.param: spec for spec in getattr(form_class, "inputs", ())}
    data = QueryDict(mutable=True)
    files: dict[str, Any] = {}
    names: dict[str, str] = {"watermark": "watermark_info", "source_video": "video_id"}
    uploads = uploads if uploads is not None else MultiValueDict()
    for key in uploads:
        spec = specs.get(key)
        if spec is None:
            raise ApiError(
                400, "unknown_field", f"{key} is not a file input of {family.key} tasks.", field=key
            )
        parts = _file_parts(uploads, key)
        if len(parts) != 1:
            raise ApiError(400, "invalid", f"{key}: send one file.", field=key)
        if body.get(key) not in (None, ""):
            raise ApiError(
                400, "invalid", f"{key}: give either a file part or a value, not both.", field=key
            )
        for part in ("file", "url", "stored"):
            names[f"{spec.name}_{part}"] = key
        files[f"{spec.name}_file"] = parts[0]
    for key, value in body.items():
        if key in PORTAL_KEYS:
            raise ApiError(400, "invalid", f"{key} is set by the portal; leave it out.", field=key)
        value = _one(value, field=key)
        spec = specs.get(key)
        if spec is not None:
            for part in ("file", "url", "stored"):
                names[f"{spec.name}_{part}"] = key
            if value is None or (key in uploads and value == ""):
                continue
            if not isinstance(value, str):
                raise ApiError(400, "invalid", f"{key} must be a URL or Base64 text.", field=key)
            text = value.strip()
            if text.startswith(("http://", "https://")):
                data[f"{spec.name}_url"] = text
            else:
                raw = _decode_base64(text, field=key)
                files[f"{spec.name}_file"] = SimpleUploadedFile(key, raw)
            continue
        if key == "watermark_info":
            if value is None:
                continue
            if not isinstance(value, dict) or set(value) - {"enabled"}:
                raise ApiError(
                    400, "invalid", 'watermark_info must be {"enabled": true|false}.', field=key
                )
            if _scalar(value.get("enabled"), field=key):
                data["watermark"] = "on"
            continue
        if key in form_class.base_fields and key not in names:
            scalar = _scalar(value, field=key)
            if scalar is not None:
                data[key] = scalar
            continue
        raise ApiError(
            400, "unknown_field", f"{key} is not a field of {family.key} tasks.", field=key
        )
    # An omitted field takes what the create page preselects (mode std, 16:9, 5 s...).
    for name, field in form_class.base_fields.items():
        unset = name not in data and name not in names
        if unset and field.initial not in (None, "") and not isinstance(field.initial, bool):
            data[name] = str(field.initial)
    form = form_class(data, files, team=team, user=user)
    form.keep_on_error = False  # no page to carry a kept-upload token back
    return form, names


def first_form_error(form: Any, names: dict[str, str]) -> ApiError:
    """The form's first error as an ``ApiError`` (400): its code (``invalid`` when none),
    the form's own message, and the body field it concerns (None for the whole body);
    every error in ``details``."""
    details = []
    for name, errors in form.errors.as_data().items():
        field = None if name == "__all__" else names.get(name, name)
        for error in errors:
            for message in error.messages:
                details.append(
                    {"code": error.code or "invalid", "message": message, "field": field}
                )
    if not details:
        return ApiError(400, "invalid", "The request is not valid.")
    first = details[0]
    return ApiError(400, first["code"], first["message"], field=first["field"], details=details)


# -- elements ---------------------------------------------------------------------------

#: ``ElementForm`` field → the request field it comes from (error messages name these).
ELEMENT_NAMES = {
    "name": "element_name",
    "description": "element_description",
    "reference_type": "reference_type",
    "frontal_image": "element_image_list.frontal_image",
    "frontal_image_url": "element_image_list.frontal_image",
    "refer_images": "element_image_list.refer_images",
    "refer_image_urls": "element_image_list.refer_images",
    "video": "element_video_list.refer_videos",
    "video_url": "element_video_list.refer_videos",
    "voice_id": "element_voice_id",
    "tags": "tag_list",
}
#: Body keys copied to a text field of the form.
_ELEMENT_TEXT = {
    "element_name": "name",
    "element_description": "description",
    "reference_type": "reference_type",
    "element_voice_id": "voice_id",
}
#: Multipart file parts of ``POST /api/v1/elements`` and the list they fill.
ELEMENT_FILE_PARTS = {
    "frontal_image": "element_image_list.frontal_image",
    "refer_images": "element_image_list.refer_images",
    "refer_videos": "element_video_list.refer_videos",
}


def _shape(message: str, field: str) -> ApiError:
    return ApiError(400, "invalid", message, field=field)


def _element_sources(body: dict, uploads: MultiValueDict) -> dict[str, list]:
    """The inputs of an element request as ``{"frontal": [...], "refers": [...],
    "videos": [...]}``, each item a text (URL or Base64) or an ``UploadedFile``."""
    sources: dict[str, list] = {"frontal": [], "refers": [], "videos": []}
    images = body.get("element_image_list")
    if images is not None:
        field = "element_image_list"
        if not isinstance(images, dict) or set(images) - {"frontal_image", "refer_images"}:
            raise _shape(
                'element_image_list must be {"frontal_image": ..., "refer_images": '
                '[{"image_url": ...}, ...]}.',
                field,
            )
        frontal = images.get("frontal_image")
        if frontal is not None:
            if not isinstance(frontal, str):
                raise _shape(
                    "element_image_list.frontal_image must be a URL or Base64 text.",
                    f"{field}.frontal_image",
                )
            sources["frontal"].append(frontal)
        refers = images.get("refer_images")
        if refers is not None:
            if not isinstance(refers, list):
                raise _shape(
                    'element_image_list.refer_images must be a list of {"image_url": ...}.',
                    f"{field}.refer_images",
                )
            for item in refers:
                url = item.get("image_url") if isinstance(item, dict) else None
                if not isinstance(url, str) or set(item) != {"image_url"}:
                    raise _shape(
                        'Each element_image_list.refer_images item must be {"image_url": '
                        "URL or Base64 text}.",
                        f"{field}.refer_images",
                    )
                sources["refers"].append(url)
    videos = body.get("element_video_list")
    if videos is not None:
        field = "element_video_list.refer_videos"
        items = videos.get("refer_videos") if isinstance(videos, dict) else None
        if not isinstance(items, list) or set(videos) != {"refer_videos"}:
            raise _shape(
                'element_video_list must be {"refer_videos": [{"video_url": ...}]}.', field
            )
        for item in items:
            url = item.get("video_url") if isinstance(item, dict) else None
            if not isinstance(url, str) or set(item) != {"video_url"}:
                raise _shape(
                    'Each element_video_list.refer_videos item must be {"video_url": URL or '
                    "Base64 text}.",
                    field,
                )
            sources["videos"].append(url)
    # Multipart: file parts (and text parts of the same names: URL or Base64).
    slots = {"frontal_image": "frontal", "refer_images": "refers", "refer_videos": "videos"}
    for key in uploads:
        if key not in slots:
            raise ApiError(
                400,
                "unknown_field",
                f"{key} is not a file part of elements (frontal_image, refer_images, "
                "refer_videos).",
                field=key,
            )
        sources[slots[key]].extend(_file_parts(uploads, key))
    for key, slot in slots.items():
        value = body.get(key)
        if value is None:
            continue
        values = value if isinstance(value, list) else [value]
        if not all(isinstance(v, str) for v in values):
            raise _shape(f"{key} must be a file part, a URL or Base64 text.", key)
        sources[slot].extend(v for v in values if v.strip())
    return sources


def _element_input(value: Any, *, field: str) -> tuple[str | None, UploadedFile | None]:
    """``(url, None)`` for an http(s) URL, ``(None, upload)`` for Base64 text or a file."""
    if isinstance(value, UploadedFile):
        return None, value
    text = value.strip()
    if text.startswith(("http://", "https://")):
        return text, None
    name = field.rsplit(".", 1)[-1]
    return None, SimpleUploadedFile(name, _decode_base64(text, field=field))


def element_form_from_body(
    body: dict, *, uploads: MultiValueDict | None = None, team: Any, user: Any
) -> tuple[Any, dict[str, str]]:
    """The bound ``elements_app.forms.ElementForm`` (the create page's form) for an element
    request ``body`` (the vendor's create body, KLING_API.md §5.4) and multipart file parts
    ``uploads``, and the map from form field names back to request field names.

    Raises ``ApiError`` (400) for unknown keys, portal-set keys, badly shaped values, more
    than one frontal image or reference video, and an input list that does not match
    ``reference_type``. Everything else (lengths, counts, image and video rules, tags) is
    the form's.
    """
    from elements_app.forms import ElementForm
    from elements_app.models import ReferenceType

    uploads = uploads if uploads is not None else MultiValueDict()
    allowed = {*_ELEMENT_TEXT, "element_image_list", "element_video_list", "tag_list"}
    allowed |= set(ELEMENT_FILE_PARTS)
    for key in body:
        if key in PORTAL_KEYS:
            raise ApiError(400, "invalid", f"{key} is set by the portal; leave it out.", field=key)
        if key not in allowed:
            raise ApiError(400, "unknown_field", f"{key} is not a field of elements.", field=key)
    data = QueryDict(mutable=True)
    files = MultiValueDict()
    for key, name in _ELEMENT_TEXT.items():
        value = _one(body.get(key), field=key)
        scalar = _scalar(value, field=key)
        if scalar is not None:
            data[name] = scalar
    if "reference_type" not in data:
        data["reference_type"] = ElementForm.base_fields["reference_type"].initial
    tags = body.get("tag_list")
    if tags is not None:
        if isinstance(tags, str):
            try:
                tags = json.loads(tags) if tags.lstrip().startswith("[") else [tags]
            except ValueError:
                raise _shape("tag_list must be JSON text or tag ids.", "tag_list") from None
        if not isinstance(tags, list):
            raise _shape('tag_list must be a list of {"tag_id": ...}.', "tag_list")
        ids = []
        for item in tags:
            tag = item.get("tag_id") if isinstance(item, dict) else item
            if not isinstance(tag, str):
                raise _shape('Each tag_list item must be {"tag_id": "o_101"…"o_108"}.', "tag_list")
            ids.append(tag)
        data.setlist("tags", ids)

    sources = _element_sources(body, uploads)
    kind = data["reference_type"]
    if kind == ReferenceType.VIDEO_REFER and (sources["frontal"] or sources["refers"]):
        raise _shape(
            "element_image_list is for reference_type image_refer; leave it out for video_refer.",
            "element_image_list",
        )
    if kind == ReferenceType.IMAGE_REFER and sources["videos"]:
        raise _shape(
            "element_video_list is for reference_type video_refer; leave it out for image_refer.",
            "element_video_list",
        )
    if len(sources["frontal"]) > 1:
        raise _shape(
            f"Give one frontal image (got {len(sources['frontal'])}).",
            "element_image_list.frontal_image",
        )
    if len(sources["videos"]) > 1:
        raise _shape(
            f"element_video_list.refer_videos must hold exactly 1 video "
            f"(got {len(sources['videos'])}).",
            "element_video_list.refer_videos",
        )
    for value in sources["frontal"]:
        url, upload = _element_input(value, field="element_image_list.frontal_image")
        if url:
            data["frontal_image_url"] = url
        else:
            files["frontal_image"] = upload
    refer_urls = []
    for value in sources["refers"]:
        url, upload = _element_input(value, field="element_image_list.refer_images")
        if url:
            refer_urls.append(url)
        else:
            files.appendlist("refer_images", upload)
    if refer_urls:
        data["refer_image_urls"] = "\n".join(refer_urls)
    for value in sources["videos"]:
        url, upload = _element_input(value, field="element_video_list.refer_videos")
        if url:
            data["video_url"] = url
        else:
            files["video"] = upload
    form = ElementForm(data, files, team=team, user=user)
    form.keep_on_error = False  # no page to carry a kept-upload token back
    return form, dict(ELEMENT_NAMES)

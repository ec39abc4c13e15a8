"""Create forms and validators: every vendor rule of KLING_API.md §5 at its boundary."""

from __future__ import annotations

import io
import wave
from datetime import timedelta

import pytest
from django.core.exceptions import ValidationError
from django.core.files.uploadedfile import SimpleUploadedFile
from django.utils import timezone
from PIL import Image

from tasks_app.families import get_family
from tasks_app.forms import (
    AvatarForm,
    Image2VideoForm,
    MultiShotForm,
    Text2VideoForm,
    VideoExtendForm,
)
from tasks_app.models import Status, Task
from tasks_app.validators import check_audio_file, check_image_file, check_media_url

MB = 1024 * 1024


@pytest.fixture(autouse=True)
def fast_and_isolated(settings, tmp_path):
    """Cheap password hashing for the cast; uploads go to a temporary MEDIA_ROOT."""
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]
    settings.MEDIA_ROOT = str(tmp_path / "media")


# -- media makers (shared with the other task test files) ------------------------------


def image_bytes(width: int, height: int, fmt: str = "PNG", pad_to: int | None = None) -> bytes:
    """A real image of ``width``×``height``; ``pad_to`` appends bytes after the image data
    (decoders ignore them) so the file has exactly that many bytes."""
    buf = io.BytesIO()
    Image.new("RGB", (width, height), (200, 80, 40)).save(buf, fmt)
    data = buf.getvalue()
    if pad_to is not None:
        assert pad_to >= len(data)
        data += b"\0" * (pad_to - len(data))
    return data


def upload(name: str, data: bytes, content_type: str = "application/octet-stream"):
    """An uploaded file as the browser sends it (the name and type are the user's)."""
    return SimpleUploadedFile(name, data, content_type=content_type)


def wav_bytes(seconds: float, rate: int = 8000, width: int = 2) -> bytes:
    """A silent mono WAV of ``seconds`` (frames = seconds × rate), made with ``wave``."""
    buf = io.BytesIO()
    with wave.open(buf, "wb") as out:
        out.setnchannels(1)
        out.setsampwidth(width)
        out.setframerate(rate)
        out.writeframes(b"\0" * (int(round(seconds * rate)) * width))
    return buf.getvalue()


def png_upload(width=400, height=400, name="face.png", **kw):
    """An uploaded PNG."""
    return upload(name, image_bytes(width, height, **kw), "image/png")


def wav_upload(seconds=3.0, name="voice.wav", **kw):
    """An uploaded WAV."""
    return upload(name, wav_bytes(seconds, **kw), "audio/wav")


def errors_of(form) -> str:
    """All error messages of a form as one string."""
    return " ".join(str(message) for errs in form.errors.values() for message in errs)


# -- image rule --------------------------------------------------------------------------


class TestImageRule:
    def test_300_px_accepted_299_refused_naming_the_limit(self):
        assert check_image_file(png_upload(300, 300)).width == 300
        with pytest.raises(ValidationError) as exc:
            check_image_file(png_upload(299, 400))
        assert "Image is 299×400 px; both sides must be at least 300 px." in exc.value.messages

    def test_aspect_2_5_to_1_accepted_2_6_refused(self):
        assert check_image_file(png_upload(750, 300)).width == 750
        assert check_image_file(png_upload(300, 750)).height == 750
        with pytest.raises(ValidationError) as exc:
            check_image_file(png_upload(780, 300))
        assert "2.6:1" in exc.value.messages[0]
        assert "between 1:2.5 and 2.5:1" in exc.value.messages[0]
        with pytest.raises(ValidationError):
            check_image_file(png_upload(300, 780))

    def test_10_mb_accepted_one_byte_more_refused(self):
        exactly = upload("big.png", image_bytes(400, 400, pad_to=10 * MB))
        assert check_image_file(exactly).size == 10 * MB
        over = upload("big.png", image_bytes(400, 400, pad_to=10 * MB + 1))
        with pytest.raises(ValidationError) as exc:
            check_image_file(over)
        assert "the limit is 10 MB" in exc.value.messages[0]

    def test_png_named_jpg_is_accepted_as_png(self):
        info = check_image_file(upload("photo.jpg", image_bytes(400, 400, "PNG"), "image/jpeg"))
        assert info.format == "png"

    def test_jpeg_accepted(self):
        assert check_image_file(upload("a.jpeg", image_bytes(320, 640, "JPEG"))).format == "jpg"

    def test_text_named_png_refused(self):
        with pytest.raises(ValidationError) as exc:
            check_image_file(upload("face.png", b"hello, I am text\n" * 40, "image/png"))
        assert "not a JPG or PNG image" in exc.value.messages[0]

    def test_gif_refused_by_content(self):
        with pytest.raises(ValidationError) as exc:
            check_image_file(upload("face.png", image_bytes(400, 400, "GIF")))
        assert "GIF" in exc.value.messages[0]


# -- audio rule --------------------------------------------------------------------------


class TestAudioRule:
    def test_2_s_accepted_1_9_s_refused(self):
        assert check_audio_file(wav_upload(2.0)).duration_s == pytest.approx(2.0)
        with pytest.raises(ValidationError) as exc:
            check_audio_file(wav_upload(1.9))
        assert exc.value.messages == ["Sound is 1.9 s long; it must be between 2 and 300 s."]

    def test_300_s_accepted_300_1_refused(self):
        assert check_audio_file(wav_upload(300.0, width=1)).format == "wav"
        with pytest.raises(ValidationError) as exc:
            check_audio_file(wav_upload(300.1, width=1))
        assert "between 2 and 300 s" in exc.value.messages[0]

    def test_over_5_mb_refused(self):
        data = wav_bytes(60, rate=44100)  # 5.3 MB, 60 s
        assert len(data) > 5 * MB
        with pytest.raises(ValidationError) as exc:
            check_audio_file(upload("voice.wav", data))
        assert "the limit is 5 MB" in exc.value.messages[0]

    def test_wav_named_mp3_is_read_as_wav(self):
        assert check_audio_file(upload("voice.mp3", wav_bytes(3))).format == "wav"

    def test_text_named_mp3_refused(self):
        with pytest.raises(ValidationError) as exc:
            check_audio_file(upload("voice.mp3", b"not audio at all " * 100))
        assert "not a readable MP3, WAV, M4A or AAC" in exc.value.messages[0]


class TestMediaUrl:
    def test_https_image_url_accepted(self):
        assert check_media_url(" https://cdn.example.com/a.PNG ", "image").endswith(".PNG")

    def test_url_without_extension_left_to_vendor(self):
        assert check_media_url("https://cdn.example.com/render?id=3", "image")

    @pytest.mark.parametrize(
        "url", ["ftp://example.com/a.png", "javascript:alert(1)", "example.com/a.png", ""]
    )
    def test_non_http_refused(self, url):
        with pytest.raises(ValidationError):
            check_media_url(url, "image")

    def test_wrong_extension_refused(self):
        with pytest.raises(ValidationError) as exc:
            check_media_url("https://example.com/a.gif", "image")
        assert ".jpg, .jpeg, .png" in exc.value.messages[0]
        with pytest.raises(ValidationError):
            check_media_url("https://example.com/a.png", "audio")


# -- the forms ---------------------------------------------------------------------------


@pytest.fixture
def team(portal):
    return portal.team


def avatar(team, data=None, files=None):
    base = {"mode": "std"}
    base.update(data or {})
    return AvatarForm(base, files or {}, team=team)


class TestAvatarForm:
    def test_valid_with_upload_and_sound(self, team):
        form = avatar(
            team,
            {"prompt": "waves"},
            {"image_file": png_upload(), "sound_file": wav_upload()},
        )
        assert form.is_valid(), form.errors
        form.store_files()
        params = get_family("avatar").build_params(form.cleaned_data, team)
        assert params["image"]["$file"].startswith(f"uploads/{team.code}/image/")
        assert params["image"]["$file"].endswith(".png")
        assert params["sound_file"]["$file"].endswith(".wav")
        assert params["mode"] == "std"
        assert params["watermark_info"] == {"enabled": False}
        assert "audio_id" not in params

    def test_uploads_are_sent_as_raw_base64(self, team, settings):
        import base64

        settings.PUBLIC_BASE_URL = ""
        data = image_bytes(400, 400)
        form = avatar(team, {"audio_id": "a"}, {"image_file": upload("f.png", data)})
        assert form.is_valid(), form.errors
        form.store_files()
        params = get_family("avatar").build_params(form.cleaned_data, team)
        task = Task.objects.create(team=team, family="avatar", params=params)
        body = get_family("avatar").request_body(task, callback_url=None)
        assert body["image"] == base64.b64encode(data).decode("ascii")
        assert not body["image"].startswith("data:")
        assert body["external_task_id"] == str(task.code)
        assert "callback_url" not in body
        assert task.params["image"] == params["image"], "the stored params keep the reference"

    def test_image_url_and_audio_id(self, team):
        form = avatar(
            team, {"image_url": "https://example.com/face.png", "audio_id": "aud-1", "mode": "pro"}
        )
        assert form.is_valid(), form.errors
        params = get_family("avatar").build_params(form.cleaned_data, team)
        assert params == {
            "image": "https://example.com/face.png",
            "audio_id": "aud-1",
            "mode": "pro",
            "watermark_info": {"enabled": False},
        }

    def test_sound_and_audio_id_together_refused(self, team):
        form = avatar(
            team,
            {"image_url": "https://example.com/face.png", "audio_id": "aud-1"},
            {"sound_file": wav_upload()},
        )
        assert not form.is_valid()
        assert "exactly one of" in " ".join(form.errors["audio_id"])

    def test_no_sound_refused(self, team):
        form = avatar(team, {"image_url": "https://example.com/face.png"})
        assert not form.is_valid()
        assert "Give the sound" in form.errors["sound_file"][0]

    def test_image_required(self, team):
        form = avatar(team, {"audio_id": "a"})
        assert not form.is_valid()
        assert "Upload the avatar image or paste its URL." in form.errors["image_file"]

    def test_file_and_url_together_refused(self, team):
        form = avatar(
            team,
            {"image_url": "https://example.com/face.png", "audio_id": "a"},
            {"image_file": png_upload()},
        )
        assert not form.is_valid()
        assert "not both" in form.errors["image_url"][0]

    def test_image_errors_next_to_the_field(self, team):
        form = avatar(team, {"audio_id": "a"}, {"image_file": png_upload(299, 400)})
        assert not form.is_valid()
        assert form.errors["image_file"] == [
            "Image is 299×400 px; both sides must be at least 300 px."
        ]

    def test_short_sound_refused(self, team):
        form = avatar(
            team,
            {"image_url": "https://example.com/face.png"},
            {"sound_file": wav_upload(1.9)},
        )
        assert not form.is_valid()
        assert "1.9 s" in form.errors["sound_file"][0]

    def test_prompt_2500_accepted_2501_refused(self, team):
        ok = avatar(
            team, {"image_url": "https://e.com/a.png", "audio_id": "a", "prompt": "é" * 2500}
        )
        assert ok.is_valid(), ok.errors
        bad = avatar(
            team, {"image_url": "https://e.com/a.png", "audio_id": "a", "prompt": "x" * 2501}
        )
        assert not bad.is_valid()
        assert bad.errors["prompt"] == ["Prompt is 2501 characters long; the limit is 2500."]

    def test_crlf_counts_as_one_character(self, team):
        text = ("y" * 99 + "\r\n") * 25  # 2500 with LF, 2525 with CR LF
        form = avatar(team, {"image_url": "https://e.com/a.png", "audio_id": "a", "prompt": text})
        assert form.is_valid(), form.errors

    def test_mode_must_be_std_or_pro(self, team):
        form = avatar(team, {"image_url": "https://e.com/a.png", "audio_id": "a", "mode": "max"})
        assert not form.is_valid()
        assert "mode" in form.errors

    def test_text_file_named_png_refused(self, team):
        form = avatar(team, {"audio_id": "a"}, {"image_file": upload("x.png", b"text " * 100)})
        assert not form.is_valid()
        assert "not a JPG or PNG" in form.errors["image_file"][0]

    def test_run_again_initial_keeps_earlier_upload(self, team):
        form = avatar(team, {"audio_id": "a"}, {"image_file": png_upload()})
        assert form.is_valid()
        form.store_files()
        params = get_family("avatar").build_params(form.cleaned_data, team)
        initial = AvatarForm.initial_from_params(params)
        assert initial["image_stored"] == params["image"]["$file"]
        again = AvatarForm({**initial, "mode": "std"}, {}, team=team)
        assert again.is_valid(), again.errors
        assert again.cleaned_data["image"] == params["image"]

    def test_earlier_upload_of_another_team_refused(self, team, portal):
        form = avatar(portal.other_team, {"audio_id": "a"}, {"image_file": png_upload()})
        assert form.is_valid()
        form.store_files()
        stolen = form.cleaned_data["image"]["$file"]
        mine = avatar(team, {"audio_id": "a", "image_stored": stolen})
        assert not mine.is_valid()
        assert "earlier upload is gone" in mine.errors["image_file"][0]


class TestVideoExtendForm:
    def _video_task(self, team, *, model="kling-v1-6", duration="5", age_days=1, vid="v-1"):
        born = timezone.now() - timedelta(days=age_days)
        return Task.objects.create(
            team=team,
            family="text2video",
            model_name=model,
            status=Status.SUCCEED,
            prompt="a cat",
            result={"videos": [{"id": vid, "url": "https://x/v.mp4", "duration": duration}]},
            vendor_created_at=born,
            finished_at=born,
        )

    def test_pick_a_team_video(self, team):
        self._video_task(team)
        form = VideoExtendForm({"source_video": "v-1", "cfg_scale": "0.5"}, team=team)
        assert form.is_valid(), form.errors
        params = get_family("video_extend").build_params(form.cleaned_data, team)
        assert params["video_id"] == "v-1"
        assert params["cfg_scale"] == 0.5

    def test_only_eligible_videos_offered(self, team):
        self._video_task(team, vid="ok")
        self._video_task(team, vid="v2", model="kling-v2-master")
        self._video_task(team, vid="old", age_days=31)
        self._video_task(team, vid="long", duration="178")
        values = [value for value, _ in VideoExtendForm(team=team).fields["source_video"].choices]
        assert values == ["", "ok"]

    def test_pasted_id_of_a_v2_video_refused_with_reason(self, team):
        self._video_task(team, vid="v2", model="kling-v2-master")
        form = VideoExtendForm({"video_id": "v2"}, team=team)
        assert not form.is_valid()
        assert "only kling-v1, kling-v1-5 and kling-v1-6" in form.errors["video_id"][0]

    def test_unknown_pasted_id_left_to_vendor(self, team):
        form = VideoExtendForm({"video_id": "elsewhere-123"}, team=team)
        assert form.is_valid(), form.errors
        assert form.cleaned_data["video_id"] == "elsewhere-123"

    def test_nothing_chosen_refused(self, team):
        form = VideoExtendForm({}, team=team)
        assert not form.is_valid()
        assert "Pick a video" in form.errors["source_video"][0]

    @pytest.mark.parametrize(
        "value,ok", [("0", True), ("1", True), ("1.01", False), ("-0.1", False)]
    )
    def test_cfg_scale_range(self, team, value, ok):
        form = VideoExtendForm({"video_id": "x", "cfg_scale": value}, team=team)
        assert form.is_valid() is ok
        if not ok:
            assert "between 0 and 1" in form.errors["cfg_scale"][0]

    def test_negative_prompt_2501_refused(self, team):
        form = VideoExtendForm({"video_id": "x", "negative_prompt": "n" * 2501}, team=team)
        assert not form.is_valid()
        assert "Negative prompt is 2501 characters long" in form.errors["negative_prompt"][0]

    def test_query_video_id_selects_team_video(self, team):
        self._video_task(team)
        form = VideoExtendForm(
            initial=VideoExtendForm.initial_from_query({"video_id": "v-1"}), team=team
        )
        assert form["source_video"].value() == "v-1"
        assert not form["video_id"].value()
        other = VideoExtendForm(
            initial=VideoExtendForm.initial_from_query({"video_id": "zz"}), team=team
        )
        assert other["video_id"].value() == "zz"


class TestMultiShotForm:
    def test_upload(self, team):
        form = MultiShotForm({}, {"frontal_image_file": png_upload(300, 750)}, team=team)
        assert form.is_valid(), form.errors

    def test_url_and_query_prefill(self, team):
        initial = MultiShotForm.initial_from_query({"frontal_image_url": "https://e.com/f.jpg"})
        form = MultiShotForm(initial=initial, team=team)
        assert form["frontal_image_url"].value() == "https://e.com/f.jpg"
        bound = MultiShotForm(initial, team=team)
        assert bound.is_valid()
        params = get_family("multi_shot").build_params(bound.cleaned_data, team)
        assert params == {"element_frontal_image": "https://e.com/f.jpg"}

    def test_too_wide_refused(self, team):
        form = MultiShotForm({}, {"frontal_image_file": png_upload(780, 300)}, team=team)
        assert not form.is_valid()
        assert "aspect" in form.errors["frontal_image_file"][0]


class TestText2VideoForm:
    def data(self, **kw):
        base = {
            "model_name": "kling-v1-6",
            "prompt": "a red fox",
            "mode": "std",
            "aspect_ratio": "16:9",
            "duration": "5",
        }
        base.update(kw)
        return base

    def test_valid(self, team):
        form = Text2VideoForm(self.data(duration="10", cfg_scale="0.7"), team=team)
        assert form.is_valid(), form.errors
        params = get_family("text2video").build_params(form.cleaned_data, team)
        assert params == {
            "model_name": "kling-v1-6",
            "prompt": "a red fox",
            "cfg_scale": 0.7,
            "mode": "std",
            "aspect_ratio": "16:9",
            "duration": "10",
        }

    def test_prompt_required(self, team):
        form = Text2VideoForm(self.data(prompt=""), team=team)
        assert not form.is_valid()
        assert "prompt" in form.errors

    @pytest.mark.parametrize(
        "field,value",
        [("duration", "7"), ("aspect_ratio", "4:3"), ("mode", "turbo"), ("model_name", "x")],
    )
    def test_enumerations(self, team, field, value):
        assert not Text2VideoForm(self.data(**{field: value}), team=team).is_valid()

    def test_prompt_2501_refused(self, team):
        form = Text2VideoForm(self.data(prompt="p" * 2501), team=team)
        assert not form.is_valid()


class TestImage2VideoForm:
    def test_image_and_tail(self, team):
        form = Image2VideoForm(
            {"model_name": "kling-v1-6", "mode": "pro", "duration": "5"},
            {"image_file": png_upload(), "image_tail_file": png_upload(name="end.jpg")},
            team=team,
        )
        assert form.is_valid(), form.errors
        form.store_files()
        params = get_family("image2video").build_params(form.cleaned_data, team)
        assert set(params) == {"model_name", "image", "image_tail", "mode", "duration"}

    def test_bad_tail_refused_next_to_tail(self, team):
        form = Image2VideoForm(
            {"model_name": "kling-v1-6", "mode": "std", "duration": "5"},
            {"image_file": png_upload(), "image_tail_file": png_upload(299, 299)},
            team=team,
        )
        assert not form.is_valid()
        assert list(form.errors) == ["image_tail_file"]

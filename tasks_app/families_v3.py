"""The Kling 3.0 task families on the 2026 API design (KLING_API_2026.md §1, §4).

Each is a ``TaskFamily`` with ``design="2026"`` and a ``client_family`` that is one of the
client's ``NEW_DESIGN_PATHS`` keys: ``KlingClient.create_task`` sends it to
``POST /{capability}/{model}`` and ``get_task`` asks ``GET /tasks``, so submission, the
lookup after a lost answer and ``task_apply_remote`` work unchanged (the client reads the
2026 answer into the same ``KlingTask``: ``succeeded`` → ``succeed``, ``outputs[]`` →
``task_result.videos``, ``billing[]`` → ``final_unit_deduction``). ``extra["model_name"]``
is the model recorded on ``Task.model_name`` (usage by model). The Omni family, which offers
the team's elements, is ``elements_app.omni.OMNI_VIDEO_3_0``.
"""

from __future__ import annotations

from tasks_app.families import DESIGN_2026, TaskFamily
from tasks_app.forms_v3 import (
    i2v_3_0_params,
    i2v_3_0_turbo_params,
    motion_control_params,
    t2v_3_0_params,
    t2v_3_0_turbo_params,
)

TEMPLATE = "tasks_app/create_v3.html"

T2V_3_0_TURBO = TaskFamily(
    key="t2v_3_0_turbo",
    label="Kling 3.0 Turbo text to video",
    client_family="text_to_video_3_0_turbo",
    form_class="tasks_app.forms_v3.Turbo30Text2VideoForm",
    template=TEMPLATE,
    result_kind="videos",
    description="Fast 3–15 s videos with native audio from a prompt or a storyboard.",
    build_params=t2v_3_0_turbo_params,
    design=DESIGN_2026,
    extra={"model_name": "kling-3.0-turbo"},
)
I2V_3_0_TURBO = TaskFamily(
    key="i2v_3_0_turbo",
    label="Kling 3.0 Turbo image to video",
    client_family="image_to_video_3_0_turbo",
    form_class="tasks_app.forms_v3.Turbo30Image2VideoForm",
    template=TEMPLATE,
    result_kind="videos",
    description="Fast 3–15 s videos with native audio that start from an image.",
    build_params=i2v_3_0_turbo_params,
    design=DESIGN_2026,
    extra={"model_name": "kling-3.0-turbo"},
)
T2V_3_0 = TaskFamily(
    key="t2v_3_0",
    label="Kling 3.0 text to video",
    client_family="text_to_video_3_0",
    form_class="tasks_app.forms_v3.V30Text2VideoForm",
    template=TEMPLATE,
    result_kind="videos",
    description="3–15 s videos up to 4K, with native audio and storyboards.",
    build_params=t2v_3_0_params,
    design=DESIGN_2026,
    extra={"model_name": "kling-3.0"},
)
I2V_3_0 = TaskFamily(
    key="i2v_3_0",
    label="Kling 3.0 image to video",
    client_family="image_to_video_3_0",
    form_class="tasks_app.forms_v3.V30Image2VideoForm",
    template=TEMPLATE,
    result_kind="videos",
    description="3–15 s videos up to 4K from a first (and last) frame, with elements and audio.",
    build_params=i2v_3_0_params,
    design=DESIGN_2026,
    extra={"model_name": "kling-3.0"},
)
MOTION_3_0 = TaskFamily(
    key="motion_3_0",
    label="Motion control (Kling 3.0)",
    client_family="motion_control_3_0",
    form_class="tasks_app.forms_v3.MotionControlForm",
    template=TEMPLATE,
    result_kind="videos",
    description="A character from an image performs the motion of a reference video.",
    build_params=motion_control_params,
    design=DESIGN_2026,
    extra={"model_name": "kling-3.0"},
)
MOTION_2_6 = TaskFamily(
    key="motion_2_6",
    label="Motion control (Kling 2.6)",
    client_family="motion_control_2_6",
    form_class="tasks_app.forms_v3.MotionControl26Form",
    template=TEMPLATE,
    result_kind="videos",
    description="Motion transfer on Kling 2.6 (cheaper; 720p or 1080p).",
    build_params=motion_control_params,
    design=DESIGN_2026,
    extra={"model_name": "kling-2.6"},
)

"""A local fal.ai: the queue API, real (small) rendered media and signed
webhooks.

    FAL_KEY=... python -m deploy.simulators.fal --port 9020 \\
        [--user-id omnihub-local] [--queue-seconds 0] [--run-seconds 0]

FAL_KEY (or --key) is the key clients must send; FAL_USER_ID (or
--user-id) the account webhooks are signed for; FAL_SIMULATOR_SIGNING_KEY,
optional, is a base64url Ed25519 private key (32 bytes) so the key set
survives restarts (otherwise a new key is made at start).

fal's queue API, `Authorization: Key <key>`, fal's error shapes:
    POST /{owner}/{app}[/{subpath}][?fal_webhook=<url>]   submit a job
    GET  /{owner}/{app}/requests/{id}/status[?logs=1]     202 while queued
         or running, 200 when completed
    GET  /{owner}/{app}/requests/{id}                     the result
    PUT  /{owner}/{app}/requests/{id}/cancel              202 requested,
         400 ALREADY_COMPLETED
The answer's status/response/cancel URLs name owner/app only, as fal's do,
and are built from the address the client used. Without auth:
    GET  /files/{name}              media the jobs made (PNG, animated GIF)
    GET  /.well-known/jwks.json     the Ed25519 key webhooks are signed with

Image models answer `images` (num_images of them, at most 4) drawn from the
prompt; video models (the endpoint names a video model, or the payload has
`duration`/`video_url`) answer a short animated GIF as `video`; upscalers
(`image_url` or `video_url` with `scale_factor`) answer the source enlarged.
Each job waits --queue-seconds in the queue and runs --run-seconds (both 0:
done when the submit returns); a webhook, signed as fal signs them, is sent
once when it ends (fal retries for two hours; `webhook_twice` plays that).
Cancelled jobs end without a result and their webhook reports an ERROR.

Simulator controls (no auth, loopback clients only):
    POST /simulator/faults  {"mode": m, "times": n, "prompt_contains": s,
        "failures": k, "run_seconds": x}
        applies mode m to the next n submissions (all, without `times`)
        whose prompt contains s (any prompt, without it). Modes: ok,
        submit_500, submit_422, status_500, result_500, result_422,
        content_violation, malformed (a 200 with a cut-off JSON body),
        never_finishes, slow (runs `run_seconds`), no_webhook,
        webhook_twice. For status_500, result_500 and malformed, `failures`
        makes only the job's first k such calls fail. {"mode": "ok"} alone
        clears every fault.
    GET  /simulator/requests[?prompt_contains=s]  every submission: id,
        endpoint, prompt, payload keys, answer, fault, state, cancelled and
        webhook deliveries
    POST /simulator/jobs/{id}/complete   finish a job now (never_finishes)
    POST /simulator/keys/rotate          sign with a new key from now on
    GET  /simulator/keys                 key ids and JWKS fetches seen

Every response carries `X-Simulated: true`; results say "simulated": true.
The status stream (SSE) route is not simulated.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import datetime as dt
import hashlib
import hmac
import io
import ipaddress
import json
import os
import random
import secrets
import textwrap
import time
import uuid
from collections import OrderedDict
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine, Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

import httpx
import uvicorn
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from PIL import Image, ImageDraw, ImageFont, ImageSequence, UnidentifiedImageError
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from deploy.simulators.razorpay import MarkSimulated
from libs.logs import get_logger

log = get_logger(__name__)

FAULT_MODES = frozenset(
    {
        "ok",
        "submit_500",
        "submit_422",
        "status_500",
        "result_500",
        "result_422",
        "content_violation",
        "malformed",
        "never_finishes",
        "slow",
        "no_webhook",
        "webhook_twice",
    }
)
VIDEO_WORDS = frozenset(
    {"video", "kling", "veo", "wan", "ltx", "minimax", "hunyuan", "luma", "pika"}
)
# Endpoints that say they make images, though their family also makes video
# (wan/v2.6/text-to-image).
IMAGE_WORDS = ("text-to-image", "image-to-image")
# Inputs that let a model work without a prompt (background removal, i2v).
SOURCE_FIELDS = ("image_url", "video_url", "start_image_url", "image_urls")
IMAGE_SIZES = {
    "square_hd": (1024, 1024),
    "square": (512, 512),
    "portrait_4_3": (768, 1024),
    "portrait_16_9": (576, 1024),
    "landscape_4_3": (1024, 768),
    "landscape_16_9": (1024, 576),
}
IMAGE_LONG_SIDE = 384
VIDEO_LONG_SIDE = 256
VIDEO_FRAMES = 8
FRAME_MILLISECONDS = 125
MEDIA_TYPES = {"png": "image/png", "gif": "image/gif"}
MAX_IMAGES = 4
MAX_UPSCALED_SIDE = 1024
DEFAULT_SLOW_SECONDS = 2.0
MAX_FILES = 500
MAX_RECORDS = 2000
MAX_SOURCE_BYTES = 20 * 1024 * 1024
WEBHOOK_TIMEOUT_SECONDS = 5.0
SOURCE_TIMEOUT_SECONDS = 5.0
COMPLETE_WAIT_SECONDS = 10.0
ENVIRONMENT = ("FAL_KEY", "FAL_USER_ID", "FAL_SIMULATOR_SIGNING_KEY")


def fal_error(status: int, detail: str, error_type: str | None = None) -> JSONResponse:
    """fal's flat error body for failures that are not about the input."""
    body: dict[str, Any] = {"detail": detail}
    headers = {}
    if error_type is not None:
        body["error_type"] = error_type
        headers["X-Fal-Error-Type"] = error_type
    return JSONResponse(body, status_code=status, headers=headers)


def input_error(loc: list[str], msg: str, kind: str, **extra: Any) -> dict[str, Any]:
    """One of fal's typed input errors, as listed under `detail`."""
    return {"loc": ["body", *loc], "msg": msg, "type": kind, **extra}


def content_policy_error(prompt: str) -> dict[str, Any]:
    return input_error(
        ["prompt"],
        "The content could not be processed because it was flagged by a "
        "content checker.",
        "content_policy_violation",
        url="https://docs.fal.ai/errors#content_policy_violation",
        input=prompt,
    )


@dataclass
class FaultRule:
    mode: str
    times: int | None = None
    prompt_contains: str | None = None
    failures: int | None = None
    run_seconds: float | None = None

    def matches(self, prompt: str) -> bool:
        return self.prompt_contains is None or self.prompt_contains in prompt

    def summary(self) -> dict[str, Any]:
        return {
            "mode": self.mode,
            "times": self.times,
            "prompt_contains": self.prompt_contains,
            "failures": self.failures,
            "run_seconds": self.run_seconds,
        }


@dataclass
class Outcome:
    status: int
    body: dict[str, Any]

    @property
    def failed(self) -> bool:
        return self.status >= 400


@dataclass
class Job:
    id: str
    app: str
    endpoint: str
    # Where the client reached us; media URLs are built on it.
    base: str
    payload: dict[str, Any]
    webhook_url: str | None
    mode: str
    # Seconds the job runs once out of the queue; None runs until told.
    run_seconds: float | None
    # How many more calls a flaky fault spoils; None: every call.
    flaky_calls: int | None
    state: str = "IN_QUEUE"
    cancelled: bool = False
    finish_now: bool = False
    outcome: Outcome | None = None
    started_at: float | None = None
    completed_at: float | None = None
    logs: list[dict[str, str]] = field(default_factory=list)
    deliveries: list[str] = field(default_factory=list)
    wake: asyncio.Event = field(default_factory=asyncio.Event)
    done: asyncio.Event = field(default_factory=asyncio.Event)

    @property
    def prompt(self) -> str:
        prompt = self.payload.get("prompt")
        return prompt if isinstance(prompt, str) else ""

    def spoils_call(self) -> bool:
        """Whether this call is one the job's fault makes fail."""
        if self.flaky_calls is None:
            return True
        if self.flaky_calls <= 0:
            return False
        self.flaky_calls -= 1
        return True

    def note(self, message: str) -> None:
        self.logs.append(
            {
                "message": message,
                "level": "INFO",
                "source": "user",
                "timestamp": dt.datetime.now(dt.UTC).isoformat(),
            }
        )


@dataclass
class SubmissionRecord:
    endpoint: str
    prompt: str
    payload_keys: list[str]
    answer: int
    fault: str
    job: Job | None = None

    def summary(self) -> dict[str, Any]:
        job = self.job
        return {
            "id": job.id if job else None,
            "endpoint": self.endpoint,
            "prompt": self.prompt,
            "payload_keys": self.payload_keys,
            "answer": self.answer,
            "fault": self.fault,
            "webhook": bool(job and job.webhook_url),
            "state": job.state if job else None,
            "cancelled": bool(job and job.cancelled),
            "webhook_deliveries": list(job.deliveries) if job else [],
        }


class FalSimulator:
    def __init__(
        self,
        *,
        key: str,
        user_id: str,
        signing_key: Ed25519PrivateKey,
        run_seconds: float,
        queue_seconds: float,
    ) -> None:
        self._key = key
        self.user_id = user_id
        self._signing_key = signing_key
        self.run_seconds = run_seconds
        self.queue_seconds = queue_seconds
        self.jobs: dict[str, Job] = {}
        self.submissions: list[SubmissionRecord] = []
        self.faults: list[FaultRule] = []
        self.files: OrderedDict[str, tuple[bytes, str]] = OrderedDict()
        self.jwks_requests = 0
        self._queue: list[Job] = []
        self._tasks: set[asyncio.Task[None]] = set()
        self._http = httpx.AsyncClient(timeout=WEBHOOK_TIMEOUT_SECONDS)

    def routes(self) -> list[Route]:
        requests = "/{owner}/{app}/requests/{request_id}"
        return [
            Route("/simulator/faults", local(self.set_faults), methods=["POST"]),
            Route("/simulator/requests", local(self.list_requests), methods=["GET"]),
            Route(
                "/simulator/jobs/{request_id}/complete",
                local(self.complete_job),
                methods=["POST"],
            ),
            Route("/simulator/keys/rotate", local(self.rotate_key), methods=["POST"]),
            Route("/simulator/keys", local(self.list_keys), methods=["GET"]),
            Route("/.well-known/jwks.json", self.jwks, methods=["GET"]),
            Route("/files/{name}", self.file, methods=["GET"]),
            Route(f"{requests}/status", self.status, methods=["GET"]),
            Route(f"{requests}/cancel", self.cancel, methods=["PUT"]),
            Route(requests, self.result, methods=["GET"]),
            Route("/{owner}/{app}", self.submit, methods=["POST"]),
            Route("/{owner}/{app}/{subpath:path}", self.submit, methods=["POST"]),
            # Anything else is fal's 404 (a client polling a sub-path URL
            # lands here), not Starlette's 405.
            Route("/{path:path}", self.not_found, methods=["GET", "POST", "PUT"]),
        ]

    async def close(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await self._http.aclose()

    # Queue API

    async def submit(self, request: Request) -> Response:
        if not self._authorised(request):
            return unauthorised()
        owner, app = request.path_params["owner"], request.path_params["app"]
        endpoint = "/".join(
            part for part in (owner, app, request.path_params.get("subpath")) if part
        )
        payload = await json_body(request)
        if payload is None:
            return self._refuse_submission(
                endpoint,
                {},
                422,
                [input_error([], "Input should be an object", "dict_type")],
            )
        rule = self._take_fault(payload.get("prompt"))
        refusal = self._refusal(endpoint, payload, rule)
        if refusal is not None:
            return refusal
        job = Job(
            id=str(uuid.uuid4()),
            app=f"{owner}/{app}",
            endpoint=endpoint,
            base=base_url(request),
            payload=payload,
            webhook_url=request.query_params.get("fal_webhook") or None,
            mode=rule.mode,
            run_seconds=self._run_seconds(rule),
            flaky_calls=rule.failures,
        )
        position = await self._enqueue(job)
        return JSONResponse(receipt(job, position))

    def _refusal(
        self, endpoint: str, payload: dict[str, Any], rule: FaultRule
    ) -> Response | None:
        """The answer refusing this submission (a submit fault or invalid
        input), or None to accept it."""
        if rule.mode == "submit_500":
            self._record(endpoint, payload, 500, rule.mode)
            return fal_error(500, "Internal Server Error", "internal_error")
        if rule.mode == "submit_422":
            problems = [
                input_error(
                    ["prompt"],
                    "Value error, the simulator was told to refuse this input",
                    "value_error",
                )
            ]
        else:
            problems = input_problems(job_kind(endpoint, payload), payload)
        if not problems:
            return None
        return self._refuse_submission(endpoint, payload, 422, problems, rule.mode)

    def _refuse_submission(
        self,
        endpoint: str,
        payload: Mapping[str, Any],
        status: int,
        problems: list[dict[str, Any]],
        mode: str = "ok",
    ) -> JSONResponse:
        self._record(endpoint, payload, status, mode)
        return JSONResponse({"detail": problems}, status_code=status)

    def _record(
        self,
        endpoint: str,
        payload: Mapping[str, Any],
        answer: int,
        mode: str,
        job: Job | None = None,
    ) -> None:
        prompt = payload.get("prompt")
        self.submissions.append(
            SubmissionRecord(
                endpoint=endpoint,
                prompt=prompt if isinstance(prompt, str) else "",
                payload_keys=sorted(payload),
                answer=answer,
                fault=mode,
                job=job,
            )
        )

    async def _enqueue(self, job: Job) -> int:
        """Queue the job and set it going; answers its queue position. With
        no waiting to do, the job is done before the submit is answered."""
        position = len(self._queue)
        self.jobs[job.id] = job
        self._queue.append(job)
        self._record(job.endpoint, job.payload, 200, job.mode, job)
        self._forget_old()
        log.info(
            "fal_simulator.submitted",
            request_id=job.id,
            endpoint=job.endpoint,
            fault=job.mode,
        )
        if self.queue_seconds == 0 and job.run_seconds == 0:
            self._start(job)
            await self._finish(job)
            self._spawn(self._announce(job))
        else:
            self._spawn(self._drive(job))
        return position

    def _forget_old(self) -> None:
        """Bound memory over long local runs: the oldest records go, with
        their jobs once those have ended."""
        while len(self.submissions) > MAX_RECORDS:
            job = self.submissions.pop(0).job
            if job is not None and job.state == "COMPLETED":
                self.jobs.pop(job.id, None)

    def _run_seconds(self, rule: FaultRule) -> float | None:
        if rule.mode == "never_finishes":
            return None
        if rule.mode == "slow":
            return (
                DEFAULT_SLOW_SECONDS if rule.run_seconds is None else rule.run_seconds
            )
        return self.run_seconds

    def _position(self, job: Job) -> int | None:
        return self._queue.index(job) if job in self._queue else None

    async def status(self, request: Request) -> Response:
        job = self._find_job(request)
        if isinstance(job, Response):
            return job
        if job.mode == "status_500" and job.spoils_call():
            return fal_error(500, "Internal Server Error", "internal_error")
        with_logs = request.query_params.get("logs") in ("1", "true")
        body = self._status_body(job, with_logs=with_logs)
        return JSONResponse(body, status_code=200 if job.state == "COMPLETED" else 202)

    def _status_body(self, job: Job, *, with_logs: bool) -> dict[str, Any]:
        body: dict[str, Any] = {
            "status": job.state,
            "request_id": job.id,
            "response_url": job_urls(job)["response"],
        }
        if job.state == "IN_QUEUE":
            body["queue_position"] = self._position(job)
            return body
        body["logs"] = list(job.logs) if with_logs else None
        if job.state == "COMPLETED" and job.outcome is not None:
            started = job.started_at or job.completed_at or 0.0
            body["metrics"] = {"inference_time": (job.completed_at or 0.0) - started}
            if job.outcome.failed:
                body["error"] = failure_text(job.outcome)
                body["error_type"] = failure_type(job.outcome)
        return body

    async def result(self, request: Request) -> Response:
        job = self._find_job(request)
        if isinstance(job, Response):
            return job
        if job.state != "COMPLETED" or job.outcome is None:
            return fal_error(400, "Request is still in progress")
        if job.mode == "result_500" and not job.outcome.failed and job.spoils_call():
            return fal_error(500, "Internal Server Error", "internal_error")
        if job.mode == "malformed" and job.spoils_call():
            text = json.dumps(job.outcome.body)
            return Response(text[: len(text) // 2], media_type="application/json")
        return JSONResponse(job.outcome.body, status_code=job.outcome.status)

    async def cancel(self, request: Request) -> Response:
        if not self._authorised(request):
            return unauthorised()
        job = self._job_at(request)
        if job is None:
            return JSONResponse({"status": "NOT_FOUND"}, status_code=404)
        if job.state == "COMPLETED":
            return JSONResponse({"status": "ALREADY_COMPLETED"}, status_code=400)
        # Queued jobs leave the queue; a running one is stopped by the model
        # app, which this one always does at once.
        job.cancelled = True
        self._conclude(job, cancelled_outcome())
        job.wake.set()
        log.info("fal_simulator.cancelled", request_id=job.id)
        return JSONResponse({"status": "CANCELLATION_REQUESTED"}, status_code=202)

    def _find_job(self, request: Request) -> Job | Response:
        """The job the URL names, or the refusal to answer with."""
        if not self._authorised(request):
            return unauthorised()
        job = self._job_at(request)
        return job if job is not None else fal_error(404, "Request not found")

    def _job_at(self, request: Request) -> Job | None:
        """The job the URL names, if it names the job's owner/app too."""
        job = self.jobs.get(request.path_params["request_id"])
        app = f"{request.path_params['owner']}/{request.path_params['app']}"
        return job if job is not None and job.app == app else None

    def _authorised(self, request: Request) -> bool:
        scheme, _, key = request.headers.get("authorization", "").partition(" ")
        return scheme.lower() == "key" and hmac.compare_digest(
            key.strip().encode(), self._key.encode()
        )

    async def not_found(self, request: Request) -> Response:
        return fal_error(404, "Not Found")

    # Running jobs

    def _spawn(self, work: Coroutine[Any, Any, None]) -> None:
        task = asyncio.get_running_loop().create_task(work)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _drive(self, job: Job) -> None:
        """Queue, run, finish and announce one job."""
        await pause(job, self.queue_seconds)
        if not job.cancelled:
            self._start(job)
            await pause(job, job.run_seconds)
            await self._finish(job)
        await self._announce(job)

    def _start(self, job: Job) -> None:
        self._leave_queue(job)
        job.state = "IN_PROGRESS"
        job.started_at = time.time()
        job.note("Loading the model")
        job.note("Generating")

    async def _finish(self, job: Job) -> None:
        if job.outcome is not None:
            return
        try:
            outcome = await self._outcome(job)
        except Exception:
            # A bug here must not leave the job running forever.
            log.exception("fal_simulator.render_failed", request_id=job.id)
            outcome = Outcome(500, {"detail": "Internal Server Error"})
        if job.outcome is None:  # a cancel may have come while it rendered
            self._conclude(job, outcome)

    def _conclude(self, job: Job, outcome: Outcome) -> None:
        self._leave_queue(job)
        job.outcome = outcome
        job.state = "COMPLETED"
        job.completed_at = time.time()
        job.note("Request failed" if outcome.failed else "Done")
        job.done.set()

    def _leave_queue(self, job: Job) -> None:
        if job in self._queue:
            self._queue.remove(job)

    async def _outcome(self, job: Job) -> Outcome:
        if job.mode == "result_500" and job.flaky_calls is None:
            return Outcome(500, {"detail": "Internal Server Error"})
        if job.mode == "result_422":
            problem = input_error(
                ["num_images"],
                "Input should be less than or equal to 4",
                "less_than_equal",
                ctx={"le": MAX_IMAGES},
            )
            return Outcome(422, {"detail": [problem]})
        if job.mode == "content_violation":
            return Outcome(422, {"detail": [content_policy_error(job.prompt)]})
        return await self._render(job)

    async def _render(self, job: Job) -> Outcome:
        kind = job_kind(job.endpoint, job.payload)
        if kind in ("image_upscale", "video_upscale"):
            return await self._upscale(job, kind)
        seed = job_seed(job.payload)
        if kind == "video":
            frames = await asyncio.to_thread(render_clip, job.prompt, job.payload, seed)
            return Outcome(200, self._video_body(job, frames, {"seed": seed}))
        count = image_count(job.payload)
        size = fitted(requested_size(job.payload, (1024, 1024)), IMAGE_LONG_SIDE)
        images = [
            await asyncio.to_thread(render_still, job.prompt, size, seed + index)
            for index in range(count)
        ]
        return Outcome(
            200,
            {
                "images": [self._image_entry(job, image) for image in images],
                "timings": {"inference": job.run_seconds or 0.0},
                "seed": seed,
                "has_nsfw_concepts": [False] * count,
                "prompt": job.prompt,
                "simulated": True,
            },
        )

    async def _upscale(self, job: Job, kind: str) -> Outcome:
        field_name = "video_url" if kind == "video_upscale" else "image_url"
        source = await self._source(str(job.payload[field_name]))
        factor = scale_factor(job.payload)
        try:
            frames = await asyncio.to_thread(enlarged_frames, source, factor)
        except (UnidentifiedImageError, OSError, ValueError):
            problem = input_error(
                [field_name],
                "Failed to download or read the file from the given URL",
                "file_download_error",
            )
            return Outcome(422, {"detail": [problem]})
        if kind == "video_upscale":
            return Outcome(200, self._video_body(job, frames, {}))
        image = self._image_entry(job, frames[0])
        return Outcome(200, {"image": image, "simulated": True})

    async def _source(self, url: str) -> bytes:
        """The bytes behind an input URL: a file of ours, a data URI or
        anything reachable over HTTP (empty when it cannot be had)."""
        if url.startswith("data:"):
            header, _, data = url.partition(",")
            with contextlib.suppress(ValueError):
                return base64.b64decode(data) if ";base64" in header else data.encode()
            return b""
        path = urlsplit(url).path
        name = path.removeprefix("/files/")
        if path.startswith("/files/") and name in self.files:
            return self.files[name][0]
        try:
            response = await self._http.get(url, timeout=SOURCE_TIMEOUT_SECONDS)
        except httpx.HTTPError:
            return b""
        if not response.is_success or len(response.content) > MAX_SOURCE_BYTES:
            return b""
        return response.content

    def _image_entry(self, job: Job, image: Image.Image) -> dict[str, Any]:
        data = png_bytes(image)
        return {
            "url": self._store(job, data, "png"),
            "width": image.width,
            "height": image.height,
            "content_type": "image/png",
            "file_size": len(data),
        }

    def _video_body(
        self, job: Job, frames: list[Image.Image], extra: Mapping[str, Any]
    ) -> dict[str, Any]:
        data = gif_bytes(frames)
        url = self._store(job, data, "gif")
        video = {
            "url": url,
            "content_type": "image/gif",
            "file_name": url.rsplit("/", 1)[1],
            "file_size": len(data),
            "width": frames[0].width,
            "height": frames[0].height,
            "thumbnail_url": self._store(job, png_bytes(frames[0]), "png"),
        }
        return {"video": video, **extra, "simulated": True}

    def _store(self, job: Job, data: bytes, suffix: str) -> str:
        """Keep a file of the job's and answer its URL. Old files are
        dropped, as fal's links expire: callers copy what they keep."""
        name = f"{secrets.token_hex(12)}.{suffix}"
        self.files[name] = (data, MEDIA_TYPES[suffix])
        while len(self.files) > MAX_FILES:
            self.files.popitem(last=False)
        return f"{job.base}/files/{name}"

    async def file(self, request: Request) -> Response:
        stored = self.files.get(request.path_params["name"])
        if stored is None:
            return fal_error(404, "File not found")
        data, content_type = stored
        return Response(data, media_type=content_type)

    # Webhooks

    async def _announce(self, job: Job) -> None:
        if job.webhook_url is None or job.mode == "no_webhook" or job.outcome is None:
            return
        body = webhook_body(job, job.outcome)
        for _ in range(2 if job.mode == "webhook_twice" else 1):
            await self._deliver(job, job.webhook_url, body)

    async def _deliver(self, job: Job, url: str, body: bytes) -> None:
        headers = {"Content-Type": "application/json", **self.signature(job.id, body)}
        try:
            response = await self._http.post(url, content=body, headers=headers)
        except httpx.HTTPError as exc:
            job.deliveries.append(type(exc).__name__)
            log.warning(
                "fal_simulator.webhook_failed",
                request_id=job.id,
                error=type(exc).__name__,
            )
            return
        job.deliveries.append(str(response.status_code))

    def signature(self, request_id: str, body: bytes) -> dict[str, str]:
        """fal's webhook headers: ED25519 over request id, user id,
        timestamp and the body's SHA-256, one per line."""
        timestamp = str(int(time.time()))
        message = "\n".join(
            (request_id, self.user_id, timestamp, hashlib.sha256(body).hexdigest())
        )
        return {
            "X-Fal-Webhook-Request-Id": request_id,
            "X-Fal-Webhook-User-Id": self.user_id,
            "X-Fal-Webhook-Timestamp": timestamp,
            "X-Fal-Webhook-Signature": self._signing_key.sign(message.encode()).hex(),
        }

    async def jwks(self, request: Request) -> Response:
        self.jwks_requests += 1
        return JSONResponse({"keys": [public_jwk(self._signing_key)]})

    # Controls

    async def set_faults(self, request: Request) -> Response:
        body = await json_body(request) or {}
        rule = fault_rule(body)
        if isinstance(rule, str):
            return fal_error(400, rule)
        if rule.mode == "ok" and rule.times is None and rule.prompt_contains is None:
            self.faults.clear()
        else:
            self.faults.insert(0, rule)
        return JSONResponse({"faults": [rule.summary() for rule in self.faults]})

    def _take_fault(self, prompt: object) -> FaultRule:
        """The newest rule that applies to this prompt; a counted rule wears
        off after its last submission."""
        text = prompt if isinstance(prompt, str) else ""
        for rule in self.faults:
            if not rule.matches(text):
                continue
            if rule.times is not None:
                rule.times -= 1
                if rule.times <= 0:
                    self.faults.remove(rule)
            return rule
        return FaultRule("ok")

    async def list_requests(self, request: Request) -> Response:
        contains = request.query_params.get("prompt_contains")
        records = [
            record.summary()
            for record in self.submissions
            if contains is None or contains in record.prompt
        ]
        return JSONResponse({"items": records})

    async def complete_job(self, request: Request) -> Response:
        job = self.jobs.get(request.path_params["request_id"])
        if job is None:
            return fal_error(404, "Request not found")
        job.finish_now = True
        job.wake.set()
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(COMPLETE_WAIT_SECONDS):
                await job.done.wait()
        return JSONResponse({"request_id": job.id, "state": job.state})

    async def rotate_key(self, request: Request) -> Response:
        self._signing_key = Ed25519PrivateKey.generate()
        kid = public_jwk(self._signing_key)["kid"]
        log.info("fal_simulator.key_rotated", kid=kid)
        return JSONResponse({"kid": kid})

    async def list_keys(self, request: Request) -> Response:
        return JSONResponse(
            {
                "kids": [public_jwk(self._signing_key)["kid"]],
                "jwks_requests": self.jwks_requests,
            }
        )


Handler = Callable[[Request], Awaitable[Response]]


def local(handler: Handler) -> Handler:
    """Controls answer loopback clients only."""

    async def guarded(request: Request) -> Response:
        host = request.client.host if request.client else ""
        try:
            loopback = ipaddress.ip_address(host).is_loopback
        except ValueError:
            loopback = host == "localhost"
        if not loopback:
            return fal_error(403, "Simulator controls answer loopback clients only")
        return await handler(request)

    return guarded


def unauthorised() -> JSONResponse:
    return fal_error(
        401, "Authentication is required: send the header Authorization: Key <key>."
    )


def base_url(request: Request) -> str:
    return str(request.base_url).rstrip("/")


def job_urls(job: Job) -> dict[str, str]:
    """fal's follow-up URLs: owner/app only, never the endpoint's sub-path."""
    response = f"{job.base}/{job.app}/requests/{job.id}"
    return {
        "response": response,
        "status": f"{response}/status",
        "cancel": f"{response}/cancel",
    }


def receipt(job: Job, position: int) -> dict[str, Any]:
    """fal's answer to a submit."""
    urls = job_urls(job)
    return {
        "status": "IN_QUEUE",
        "request_id": job.id,
        "gateway_request_id": job.id,
        "response_url": urls["response"],
        "status_url": urls["status"],
        "cancel_url": urls["cancel"],
        "queue_position": position,
    }


async def pause(job: Job, seconds: float | None) -> None:
    """Wait `seconds` (None: until woken); a cancel or a finish order wakes
    the job early."""
    if job.cancelled or job.finish_now or seconds == 0:
        return
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(seconds):
            await job.wake.wait()


async def json_body(request: Request) -> dict[str, Any] | None:
    try:
        body = json.loads(await request.body() or b"{}")
    except ValueError:
        return None
    return body if isinstance(body, dict) else None


def fault_rule(body: Mapping[str, Any]) -> FaultRule | str:
    """The rule a faults request asks for, or what is wrong with it."""
    mode = body.get("mode", "ok")
    if mode not in FAULT_MODES:
        return f"unknown fault mode {mode!r}"
    counts = {name: body.get(name) for name in ("times", "failures")}
    for name, value in counts.items():
        if value is not None and (not isinstance(value, int) or value < 1):
            return f"{name} must be a positive integer"
    contains = body.get("prompt_contains")
    if contains is not None and not isinstance(contains, str):
        return "prompt_contains must be text"
    run_seconds = body.get("run_seconds")
    if run_seconds is not None and (
        not isinstance(run_seconds, int | float) or run_seconds < 0
    ):
        return "run_seconds must be 0 or more"
    return FaultRule(
        mode=mode,
        times=counts["times"],
        prompt_contains=contains,
        failures=counts["failures"],
        run_seconds=float(run_seconds) if run_seconds is not None else None,
    )


def job_kind(endpoint: str, payload: Mapping[str, Any]) -> str:
    """image, video, image_upscale or video_upscale."""
    if "scale_factor" in payload:
        if isinstance(payload.get("video_url"), str):
            return "video_upscale"
        if isinstance(payload.get("image_url"), str):
            return "image_upscale"
    if "duration" in payload or "video_url" in payload:
        return "video"
    path = endpoint.lower()
    if "video" in path:
        return "video"
    if any(word in path for word in IMAGE_WORDS):
        return "image"
    return "video" if any(word in path for word in VIDEO_WORDS) else "image"


def input_problems(kind: str, payload: Mapping[str, Any]) -> list[dict[str, Any]]:
    """fal-style validation of the fields every simulated model reads."""
    problems: list[dict[str, Any]] = []
    prompt = payload.get("prompt")
    has_source = any(isinstance(payload.get(name), str) for name in SOURCE_FIELDS)
    if prompt is None and not has_source and not kind.endswith("upscale"):
        problems.append(input_error(["prompt"], "Field required", "missing"))
    elif prompt is not None and not isinstance(prompt, str):
        problems.append(
            input_error(["prompt"], "Input should be a valid string", "string_type")
        )
    count = payload.get("num_images", 1)
    if not isinstance(count, int) or isinstance(count, bool):
        problems.append(
            input_error(["num_images"], "Input should be a valid integer", "int_type")
        )
    elif not 1 <= count <= MAX_IMAGES:
        problems.append(
            input_error(
                ["num_images"],
                f"Input should be between 1 and {MAX_IMAGES}",
                "less_than_equal" if count > MAX_IMAGES else "greater_than_equal",
            )
        )
    factor = payload.get("scale_factor", 2)
    if isinstance(factor, bool) or not isinstance(factor, int | float) or factor <= 0:
        problems.append(
            input_error(
                ["scale_factor"], "Input should be a positive number", "greater_than"
            )
        )
    return problems


def image_count(payload: Mapping[str, Any]) -> int:
    count = payload.get("num_images", 1)
    return count if isinstance(count, int) else 1


def scale_factor(payload: Mapping[str, Any]) -> float:
    factor = payload.get("scale_factor", 2)
    return float(factor) if isinstance(factor, int | float) else 2.0


def job_seed(payload: Mapping[str, Any]) -> int:
    seed = payload.get("seed")
    if isinstance(seed, int) and not isinstance(seed, bool):
        return seed
    prompt = str(payload.get("prompt", ""))
    return int.from_bytes(hashlib.sha256(prompt.encode()).digest()[:4], "big")


def requested_size(
    payload: Mapping[str, Any], default: tuple[int, int]
) -> tuple[int, int]:
    """The width and height the payload asks for: an `image_size` preset or
    object, else an `aspect_ratio` such as "16:9"."""
    size = payload.get("image_size")
    if isinstance(size, str) and size in IMAGE_SIZES:
        return IMAGE_SIZES[size]
    if isinstance(size, dict):
        width, height = size.get("width"), size.get("height")
        if isinstance(width, int) and isinstance(height, int) and width > 0 < height:
            return width, height
    ratio = payload.get("aspect_ratio")
    if isinstance(ratio, str) and ratio.count(":") == 1:
        with contextlib.suppress(ValueError):
            across, down = (float(part) for part in ratio.split(":"))
            if across > 0 and down > 0:
                return round(across * 1000), round(down * 1000)
    return default


def fitted(size: tuple[int, int], long_side: int) -> tuple[int, int]:
    """`size` scaled so its longer side is `long_side` pixels."""
    scale = long_side / max(size)
    return max(16, round(size[0] * scale)), max(16, round(size[1] * scale))


def palette(rng: random.Random) -> tuple[tuple[int, int, int], ...]:
    return tuple(
        (rng.randrange(256), rng.randrange(256), rng.randrange(256)) for _ in range(6)
    )


def backdrop(size: tuple[int, int], rng: random.Random) -> Image.Image:
    """A two-colour gradient with a few shapes, all chosen by `rng`."""
    colours = palette(rng)
    mask = Image.linear_gradient("L").resize(size)
    image = Image.composite(
        Image.new("RGB", size, colours[0]), Image.new("RGB", size, colours[1]), mask
    )
    draw = ImageDraw.Draw(image)
    width, height = size
    for index in range(rng.randint(3, 6)):
        left, top = rng.randrange(width), rng.randrange(height)
        box = (
            left,
            top,
            left + rng.randint(16, width // 2),
            top + rng.randint(16, height // 2),
        )
        colour = colours[2 + index % 4]
        if index % 2:
            draw.ellipse(box, fill=colour, outline=(255, 255, 255))
        else:
            draw.rectangle(box, fill=colour)
    return image


def caption(image: Image.Image, prompt: str) -> None:
    """Writes the prompt across the bottom of the image."""
    font_size = max(11, image.width // 22)
    font = ImageFont.load_default(size=font_size)
    lines = textwrap.wrap(
        prompt or "(no prompt)", width=max(10, image.width * 2 // font_size)
    )
    text = "\n".join(lines[:4])
    top = image.height - (font_size + 4) * min(len(lines), 4) - 8
    ImageDraw.Draw(image).multiline_text(
        (8, max(4, top)),
        text,
        font=font,
        fill=(255, 255, 255),
        stroke_width=2,
        stroke_fill=(0, 0, 0),
        spacing=4,
    )


def render_still(prompt: str, size: tuple[int, int], seed: int) -> Image.Image:
    image = backdrop(size, random.Random(seed))
    caption(image, prompt)
    return image


def render_clip(
    prompt: str, payload: Mapping[str, Any], seed: int
) -> list[Image.Image]:
    """A few frames of a ball crossing the backdrop, captioned."""
    size = fitted(requested_size(payload, (1600, 900)), VIDEO_LONG_SIDE)
    rng = random.Random(seed)
    base = backdrop(size, rng)
    colour = palette(rng)[0]
    radius = max(6, size[1] // 8)
    frames = []
    for index in range(VIDEO_FRAMES):
        frame = base.copy()
        centre_x = round((index + 0.5) * size[0] / VIDEO_FRAMES)
        centre_y = size[1] // 3
        ImageDraw.Draw(frame).ellipse(
            (
                centre_x - radius,
                centre_y - radius,
                centre_x + radius,
                centre_y + radius,
            ),
            fill=colour,
            outline=(255, 255, 255),
        )
        caption(frame, prompt)
        frames.append(frame)
    return frames


def enlarged_frames(source: bytes, factor: float) -> list[Image.Image]:
    """Every frame of the source image, `factor` times larger (the longer
    side capped at MAX_UPSCALED_SIDE, never smaller than the source)."""
    with Image.open(io.BytesIO(source)) as opened:
        frames = [frame.convert("RGB") for frame in ImageSequence.Iterator(opened)]
    width, height = frames[0].size
    scale = min(factor, max(1.0, MAX_UPSCALED_SIDE / max(width, height)))
    target = (max(1, round(width * scale)), max(1, round(height * scale)))
    return [frame.resize(target, Image.Resampling.LANCZOS) for frame in frames]


def png_bytes(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def gif_bytes(frames: list[Image.Image]) -> bytes:
    buffer = io.BytesIO()
    frames[0].save(
        buffer,
        format="GIF",
        save_all=True,
        append_images=frames[1:],
        duration=FRAME_MILLISECONDS,
        loop=0,
    )
    return buffer.getvalue()


def cancelled_outcome() -> Outcome:
    return Outcome(400, {"detail": "Request was cancelled"})


def failure_text(outcome: Outcome) -> str:
    detail = outcome.body.get("detail")
    if isinstance(detail, list) and detail and isinstance(detail[0], dict):
        return str(detail[0].get("msg", ""))
    return str(detail or "")


def failure_type(outcome: Outcome) -> str:
    detail = outcome.body.get("detail")
    if isinstance(detail, list) and detail and isinstance(detail[0], dict):
        return str(detail[0].get("type", "validation_error"))
    if outcome.status == 400:
        return "request_cancelled"
    return "internal_error"


def webhook_body(job: Job, outcome: Outcome) -> bytes:
    """fal's webhook document; a failed job names the status it ended with
    and carries its error body as the payload."""
    document: dict[str, Any] = {
        "request_id": job.id,
        "gateway_request_id": job.id,
        "status": "ERROR" if outcome.failed else "OK",
        "payload": outcome.body,
    }
    if outcome.failed:
        document["error"] = f"Invalid status code: {outcome.status}"
    return json.dumps(document, separators=(",", ":")).encode()


def public_jwk(key: Ed25519PrivateKey) -> dict[str, str]:
    raw = key.public_key().public_bytes(
        serialization.Encoding.Raw, serialization.PublicFormat.Raw
    )
    return {
        "kty": "OKP",
        "crv": "Ed25519",
        "x": base64.urlsafe_b64encode(raw).rstrip(b"=").decode(),
        "kid": hashlib.sha256(raw).hexdigest()[:16],
        "use": "sig",
        "alg": "EdDSA",
    }


def signing_key_from(text: str) -> Ed25519PrivateKey:
    """A key from base64url text of its 32 private bytes."""
    raw = base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
    return Ed25519PrivateKey.from_private_bytes(raw)


def create_app(
    *,
    key: str,
    user_id: str = "omnihub-local",
    signing_key: Ed25519PrivateKey | None = None,
    run_seconds: float = 0.0,
    queue_seconds: float = 0.0,
) -> Starlette:
    simulator = FalSimulator(
        key=key,
        user_id=user_id,
        signing_key=signing_key or Ed25519PrivateKey.generate(),
        run_seconds=run_seconds,
        queue_seconds=queue_seconds,
    )

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        yield
        await simulator.close()

    app = Starlette(routes=simulator.routes(), lifespan=lifespan)
    app.add_middleware(MarkSimulated)
    app.state.simulator = simulator
    return app


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m deploy.simulators.fal",
        description="Serve a local fal.ai queue simulator. Reads "
        + ", ".join(ENVIRONMENT)
        + " from the environment.",
    )
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--key", default=os.environ.get("FAL_KEY"))
    parser.add_argument(
        "--user-id", default=os.environ.get("FAL_USER_ID") or "omnihub-local"
    )
    parser.add_argument("--queue-seconds", type=float, default=0.0)
    parser.add_argument("--run-seconds", type=float, default=0.0)
    args = parser.parse_args(argv)
    if not args.key:
        parser.error("set FAL_KEY or pass --key")
    encoded = os.environ.get("FAL_SIMULATOR_SIGNING_KEY")
    try:
        signing_key = signing_key_from(encoded) if encoded else None
    except ValueError:
        parser.error("FAL_SIMULATOR_SIGNING_KEY must be 32 bytes in base64url")
    app = create_app(
        key=args.key,
        user_id=args.user_id,
        signing_key=signing_key,
        run_seconds=args.run_seconds,
        queue_seconds=args.queue_seconds,
    )
    log.info("fal_simulator.starting", host=args.host, port=args.port)
    uvicorn.run(app, host=args.host, port=args.port, log_level="warning")


if __name__ == "__main__":
    main()

"""Realistic OmniHub users for locust.

    locust -f tests/verify/locustfile.py --headless -u 100 -r 2 -t 5m \\
        --csv out/load --host http://127.0.0.1:3001

Each user signs up, waits for the sign-up credits, then, 5 to 15 seconds
of thinking between steps: browses the models and the community feed, starts
an image generation on a cheap model and follows it (its SSE event stream,
or polling it), chats with a streamed reply, shares and publishes what it
made, likes other people's posts, and buys credits through the Razorpay
simulator's checkout when its balance runs low, now and then before (a 402
would be an error).

Every failure is named `HTTP <status> <code>` (status 0: no answer at all),
`stream error <status> <code>` for an error event inside a 200 stream, or
`generation <status> <error type>` for a generation that did not complete,
so that a stage can tell a refused request from a broken one. Generations
are reported under the pseudo route `generation outcome` (type GEN), their
time from the request to the end.
"""

from __future__ import annotations

import json
import random
import time
import uuid
from typing import Any

from locust import HttpUser, between, events, task
from locust.clients import ResponseContextManager

IMAGE_MODEL = "fal-sdxl-lightning"
CHAT_MODEL = "openai/gpt-4o-mini"
PASSWORD = "verify-" + uuid.uuid4().hex[:16]
FINISHED = ("completed", "failed", "cancelled")
# Buy credits below this balance, a pack at a time; some users buy one
# before they run low.
LOW_CREDITS = 3.0
BUY_CHANCE = 0.05
CREDIT_PACK = 100
CREDITS_WAIT_SECONDS = 30.0
GENERATION_WAIT_SECONDS = 180.0
POLL_SECONDS = 1.0
TIMEOUT_SECONDS = 60.0
THINK_SECONDS = (5, 15)
PROMPTS = (
    "a lighthouse on a cliff at dawn",
    "a bowl of ramen, studio light",
    "a fox in a snowy forest",
    "an isometric city block at night",
    "a watercolour of a sailing boat",
)
QUESTIONS = (
    "Give me three names for a coffee shop.",
    "Summarise the plot of Hamlet in two lines.",
    "What is a good stretch after running?",
    "Suggest a caption for a photo of the sea.",
)


def _error_code(body: Any) -> str:
    return str(body.get("code", "")) if isinstance(body, dict) else ""


def _describe(response: Any) -> str:
    try:
        code = _error_code(response.json())
    except ValueError:
        code = ""
    return f"HTTP {response.status_code} {code}".rstrip()


class PlatformUser(HttpUser):
    # A person looks at a page, a picture or a reply for a while before the
    # next action.
    wait_time = between(THINK_SECONDS[0], THINK_SECONDS[1])

    def on_start(self) -> None:
        self.headers: dict[str, str] = {}
        self.has_credits = False
        self.generations: list[str] = []  # completed, newest last
        self.published: set[str] = set()
        self.conversation: str | None = None
        self.credits = 0.0
        self.sign_up()

    # --- Requests -----------------------------------------------------------

    def call(
        self, method: str, path: str, name: str, expected: int = 200, **kwargs: Any
    ) -> Any:
        """The JSON body of the expected answer; None (a failure recorded
        under `name`) otherwise."""
        headers = {**self.headers, **kwargs.pop("headers", {})}
        with self.client.request(
            method,
            path,
            name=name,
            headers=headers,
            catch_response=True,
            timeout=TIMEOUT_SECONDS,
            **kwargs,
        ) as response:
            return _judge(response, expected)

    # --- Sign-up and credits -----------------------------------------------

    def sign_up(self) -> bool:
        email = f"verify-{uuid.uuid4().hex[:16]}@example.com"
        body = {"email": email, "password": PASSWORD, "name": "Verify User"}
        account = self.call(
            "POST", "/api/auth/register", "/api/auth/register", 201, json=body
        )
        if account is None:
            return False
        self.headers = {"Authorization": f"Bearer {account['accessToken']}"}
        return self.wait_for_credits()

    def wait_for_credits(self) -> bool:
        """Sign-up credits arrive through auth's outbox, a moment later."""
        deadline = time.monotonic() + CREDITS_WAIT_SECONDS
        while time.monotonic() < deadline:
            if not self.refresh_balance():
                return False
            if self.credits > 0:
                self.has_credits = True
                return True
            time.sleep(POLL_SECONDS)
        self.record("sign-up credits", CREDITS_WAIT_SECONDS, "no sign-up credits")
        return False

    def refresh_balance(self) -> bool:
        found = self.call("GET", "/api/credits/balance", "/api/credits/balance")
        if found is not None:
            self.credits = float(found["credits"])
        return found is not None

    def signed_in(self) -> bool:
        """Signed up with the sign-up credits arrived; a user whose sign-up
        failed (the platform was down) tries again."""
        if self.has_credits:
            return True
        return self.wait_for_credits() if self.headers else self.sign_up()

    def buy_credits(self) -> None:
        order = self.call(
            "POST",
            "/api/payments/create-order",
            "/api/payments/create-order",
            201,
            json={"type": "credits", "credits": CREDIT_PACK},
        )
        if order is None:
            return
        paid = self.call(
            "POST",
            "/api/payments/simulated-checkout",
            "/api/payments/simulated-checkout",
            json={"orderId": order["orderId"], "outcome": "success"},
        )
        if paid is None:
            return
        verified = self.call(
            "POST",
            "/api/payments/verify",
            "/api/payments/verify",
            json={**paid, "type": "credits"},
        )
        if verified is not None:
            self.credits = float(verified["credits"])

    # --- Browsing -----------------------------------------------------------

    @task(5)
    def browse_models(self) -> None:
        self.call("GET", "/api/models", "/api/models")

    @task(3)
    def browse_community(self) -> None:
        self.call("GET", "/api/community?sort=latest&limit=20", "/api/community")

    @task(2)
    def list_own_generations(self) -> None:
        if self.signed_in():
            self.call("GET", "/api/generations?limit=20", "/api/generations")

    # --- Generating ---------------------------------------------------------

    @task(3)
    def generate(self) -> None:
        if not self.signed_in() or not self.refresh_balance():
            return
        if self.credits < LOW_CREDITS or random.random() < BUY_CHANCE:
            self.buy_credits()
        body = {"model": IMAGE_MODEL, "type": "image", "prompt": random.choice(PROMPTS)}
        started = time.monotonic()
        # As the web client does: a retried request cannot start it twice.
        key = {"Idempotency-Key": str(uuid.uuid4())}
        created = self.call(
            "POST", "/api/generate", "/api/generate", 201, json=body, headers=key
        )
        if created is None:
            return
        generation_id = created["generations"][0]["id"]
        if random.random() < 0.5:
            status, error = self.follow_events(generation_id)
        else:
            status, error = self.poll(generation_id)
        failure = None if status == "completed" else f"generation {status} {error}"
        self.record("generation outcome", time.monotonic() - started, failure)
        if status == "completed":
            self.generations.append(generation_id)

    def follow_events(self, generation_id: str) -> tuple[str, str]:
        """The generation's SSE stream to its last event."""
        path = f"/api/generations/{generation_id}/events"
        last: dict[str, Any] = {}
        with self.client.get(
            path,
            name="/api/generations/{id}/events",
            headers=self.headers,
            stream=True,
            catch_response=True,
            timeout=GENERATION_WAIT_SECONDS,
        ) as response:
            if response.status_code != 200:  # polling still tells the end
                response.failure(_describe(response))
                return self.poll(generation_id)
            try:
                for line in response.iter_lines(decode_unicode=True):
                    if line and line.startswith("data: "):
                        last = json.loads(line[len("data: ") :])
            except Exception as error:  # the gateway went away mid-stream
                response.failure(f"HTTP 0 stream cut: {type(error).__name__}")
                return self.poll(generation_id)
            if "status" not in last:
                status = last.get("statusCode", 0)
                response.failure(f"stream error {status} {_error_code(last)}")
                return self.poll(generation_id)
        if last["status"] not in FINISHED:  # the stream ended early: ask again
            return self.poll(generation_id)
        return str(last["status"]), str(last.get("errorType") or "")

    def poll(self, generation_id: str) -> tuple[str, str]:
        deadline = time.monotonic() + GENERATION_WAIT_SECONDS
        while time.monotonic() < deadline:
            found = self.call(
                "GET", f"/api/generations/{generation_id}", "/api/generations/{id}"
            )
            if found is not None and found["status"] in FINISHED:
                return str(found["status"]), str(found.get("errorType") or "")
            time.sleep(POLL_SECONDS)
        return "unfinished", f"after {GENERATION_WAIT_SECONDS:.0f} s"

    # --- Chat ---------------------------------------------------------------

    @task(2)
    def chat(self) -> None:
        if not self.signed_in():
            return
        if self.conversation is None:
            created = self.call(
                "POST",
                "/api/chat/conversations",
                "/api/chat/conversations",
                201,
                json={"modelId": CHAT_MODEL, "title": "Verify chat"},
            )
            if created is None:
                return
            self.conversation = str(created["id"])
        self.stream_reply(self.conversation, random.choice(QUESTIONS))

    def stream_reply(self, conversation: str, question: str) -> None:
        with self.client.post(
            f"/api/chat/conversations/{conversation}/messages",
            name="/api/chat/conversations/{id}/messages",
            headers={**self.headers, "Accept": "text/event-stream"},
            json={"content": question},
            stream=True,
            catch_response=True,
            timeout=TIMEOUT_SECONDS,
        ) as response:
            if response.status_code not in (200, 201):
                response.failure(_describe(response))
                return
            last: dict[str, Any] = {}
            try:
                for line in response.iter_lines(decode_unicode=True):
                    if line and line.startswith("data: "):
                        last = json.loads(line[len("data: ") :])
            except Exception as error:
                response.failure(f"HTTP 0 stream cut: {type(error).__name__}")
                return
            if last.get("type") != "done":
                status = last.get("statusCode", 0)
                response.failure(f"stream error {status} {_error_code(last)}")

    # --- Sharing and the community -----------------------------------------

    @task(1)
    def share(self) -> None:
        if not self.generations:
            return
        body = {"generationId": self.generations[-1]}
        self.call("POST", "/api/share", "/api/share", 201, json=body)

    @task(1)
    def publish(self) -> None:
        fresh = [g for g in self.generations if g not in self.published]
        if not fresh:
            return
        body = {"generationId": fresh[-1], "title": "Made while verifying"}
        posted = self.call(
            "POST", "/api/community/publish", "/api/community/publish", 201, json=body
        )
        if posted is not None:
            self.published.add(fresh[-1])

    @task(2)
    def like(self) -> None:
        if not self.signed_in():
            return
        feed = self.call("GET", "/api/community?sort=latest&limit=20", "/api/community")
        if not feed or not feed["posts"]:
            return
        post = random.choice(feed["posts"])
        self.call(
            "POST", f"/api/community/{post['id']}/like", "/api/community/{id}/like"
        )

    # --- Reporting ----------------------------------------------------------

    def record(self, name: str, seconds: float, failure: str | None) -> None:
        events.request.fire(
            request_type="GEN",
            name=name,
            response_time=seconds * 1000,
            response_length=0,
            exception=RuntimeError(failure) if failure else None,
            context={},
        )


def _judge(response: ResponseContextManager, expected: int) -> Any:
    if response.status_code != expected:
        response.failure(_describe(response))
        return None
    try:
        return response.json()
    except ValueError:
        response.failure(f"HTTP {response.status_code} not JSON")
        return None

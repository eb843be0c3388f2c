"""Gallery categories and how a prompt is sorted into one.

A publisher may pick a category; when they pick none we know, the first
category whose keywords appear in the lower-cased prompt wins, in this
order, and `other` takes the rest. Plain substring matching is the rule the
web app was built around (so "woman" also matches "man").
"""

from __future__ import annotations

OTHER = "other"
ALL = "all"

KEYWORDS: tuple[tuple[str, tuple[str, ...]], ...] = (
    (
        "anime",
        (
            "anime",
            "manga",
            "chibi",
            "waifu",
            "kawaii",
            "studio ghibli",
            "japanese animation",
            "otaku",
            "shounen",
            "shoujo",
        ),
    ),
    (
        "realistic",
        (
            "realistic",
            "photorealistic",
            "photography",
            "portrait",
            "cinematic",
            "hyperrealistic",
            "photo",
            "lifelike",
            "natural",
        ),
    ),
    (
        "game",
        (
            "game",
            "rpg",
            "fantasy",
            "character design",
            "concept art",
            "pixel art",
            "video game",
            "gaming",
            "mmorpg",
            "d&d",
            "dungeons",
        ),
    ),
    (
        "abstract",
        (
            "abstract",
            "surreal",
            "psychedelic",
            "geometric",
            "minimalist",
            "expressionist",
            "modern art",
            "contemporary",
        ),
    ),
    (
        "nature",
        (
            "landscape",
            "nature",
            "forest",
            "ocean",
            "mountains",
            "sunset",
            "sunrise",
            "beach",
            "wildlife",
            "flowers",
            "garden",
        ),
    ),
    (
        "scifi",
        (
            "sci-fi",
            "cyberpunk",
            "futuristic",
            "robot",
            "spaceship",
            "alien",
            "space",
            "dystopian",
            "steampunk",
            "mech",
            "android",
        ),
    ),
    (
        "art",
        (
            "oil painting",
            "watercolor",
            "digital art",
            "illustration",
            "sketch",
            "impressionist",
            "renaissance",
            "baroque",
            "pop art",
        ),
    ),
    (
        "portrait",
        (
            "portrait",
            "headshot",
            "face",
            "selfie",
            "person",
            "woman",
            "man",
            "model",
            "beauty",
        ),
    ),
    (
        "architecture",
        (
            "building",
            "architecture",
            "city",
            "urban",
            "skyline",
            "interior",
            "room",
            "house",
            "castle",
            "tower",
        ),
    ),
    (
        "food",
        (
            "food",
            "dish",
            "meal",
            "cuisine",
            "cooking",
            "restaurant",
            "delicious",
            "tasty",
            "gourmet",
        ),
    ),
)

# Every category a post can have, in the order the gallery lists them.
CATEGORIES: tuple[str, ...] = (*(name for name, _ in KEYWORDS), OTHER)


def display_name(category: str) -> str:
    return category[:1].upper() + category[1:]


def classify(prompt: str) -> str:
    """The category a prompt's words point to."""
    text = prompt.lower()
    for category, words in KEYWORDS:
        if any(word in text for word in words):
            return category
    return OTHER


def choose(requested: str, prompt: str) -> str:
    """The publisher's category when it is one we know, else the prompt's."""
    wanted = requested.strip().lower()
    return wanted if wanted in CATEGORIES else classify(prompt)

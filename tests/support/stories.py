"""A template story generator: a small TinyStories-like corpus of our own for the tests."""

from __future__ import annotations

import random

NAMES = ["Lily", "Tom", "Ben", "Mia", "Sam", "Anna", "Max", "Sue"]
ANIMALS = ["dog", "cat", "bird", "fish", "frog", "bunny"]
THINGS = ["ball", "kite", "box", "hat", "cake", "boat", "tree", "car"]
PLACES = ["park", "garden", "house", "lake", "forest", "beach"]
FEELINGS = ["happy", "sad", "excited", "scared", "tired", "proud"]
COLORS = ["red", "blue", "green", "yellow", "big", "little"]

TEMPLATES = [
    "Once upon a time, there was a {color} {animal} named {name}. {name} liked to play "
    "in the {place}. One day, {name} found a {thing}. {name} was very {feeling}.",
    '{name} and {name2} went to the {place}. They saw a {color} {thing}. "Look!" said '
    '{name}. "Can we play with it?" {name2} smiled and said, "Yes, let\'s play!"',
    "One day, a {animal} lost its {thing} in the {place}. {name} wanted to help. "
    "{name} looked and looked. At last, {name} found the {thing} and the {animal} "
    "was {feeling}.",
    "{name} had a {color} {thing}. {name} loved it very much. But the {thing} broke. "
    '{name} felt {feeling}. Mom said, "We can fix it together." And they did.',
]


def make_story(rng: random.Random) -> str:
    name, name2 = rng.sample(NAMES, 2)
    fields = dict(
        name=name,
        name2=name2,
        animal=rng.choice(ANIMALS),
        thing=rng.choice(THINGS),
        place=rng.choice(PLACES),
        feeling=rng.choice(FEELINGS),
        color=rng.choice(COLORS),
    )
    paragraphs = [rng.choice(TEMPLATES).format(**fields) for _ in range(rng.randint(1, 3))]
    return "\n".join(paragraphs)


def make_corpus(n_stories: int, seed: int = 0) -> list[str]:
    rng = random.Random(seed)
    return [make_story(rng) for _ in range(n_stories)]


def write_txt(path, stories: list[str]) -> None:
    """The official TinyStories .txt format: stories separated by <|endoftext|> lines."""
    with open(path, "w", encoding="utf-8") as out:
        for story in stories:
            out.write(story + "\n<|endoftext|>\n")

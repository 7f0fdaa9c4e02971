"""Three small fine-tuning tasks, each from a seeded generator, for ``auto_quality.py``.

- extraction: a customer support message in, a one-line JSON ticket out;
- classification: a message in, one label out;
- rewrite: a sentence in, the same sentence with names and emails redacted out.

Every reply is a pure function of its prompt, so a model can learn each task exactly and
a held-out score says how much of the rule it learned. Nothing here depends on TuneForge.
"""

from __future__ import annotations

import json
import random
from collections.abc import Callable
from dataclasses import dataclass

FIRST_NAMES = [
    "Anna", "Ben", "Chloe", "Daniel", "Emma", "Felix", "Grace", "Hugo", "Ines", "Jonas",
    "Kara", "Liam", "Mia", "Noah", "Olga", "Paul", "Rosa", "Sami", "Tara", "Victor",
]  # fmt: skip
PRODUCTS = ["laptop", "phone", "headphones", "charger", "monitor", "keyboard", "camera", "watch"]
ISSUES = {
    "damaged": ["arrived broken", "came with a cracked screen", "is damaged", "was smashed"],
    "missing": ["never arrived", "is missing", "did not show up", "was not delivered"],
    "refund": ["needs to be refunded", "should be refunded", "I want my money back for"],
    "wrong_item": ["is the wrong model", "is not what I ordered", "was the wrong color"],
}
URGENCY = {True: ["asap", "urgently", "today please", "right now"], False: ["", "when you can"]}
LABELS = {
    "billing": ["I was charged twice", "my invoice is wrong", "the card payment failed"],
    "shipping": ["where is my parcel", "the delivery is late", "tracking shows nothing"],
    "account": ["I cannot log in", "reset my password", "change my email address"],
    "technical": ["the app crashes on start", "the screen stays black", "sync does not work"],
}
OPENERS = ["Hi,", "Hello,", "Hey team,", "Good morning,", ""]
DOMAINS = ["example.com", "mail.org", "shop.net"]


@dataclass(frozen=True)
class Task:
    name: str
    system: str
    make: Callable[[random.Random], tuple[str, str]]

    def examples(self, count: int, seed: int) -> list[dict]:
        """``count`` chat examples; distinct seeds give disjoint-looking draws."""
        rng = random.Random(f"{self.name}-{seed}")
        rows = []
        for _ in range(count):
            prompt, reply = self.make(rng)
            rows.append(
                {
                    "messages": [
                        {"role": "system", "content": self.system},
                        {"role": "user", "content": prompt},
                        {"role": "assistant", "content": reply},
                    ]
                }
            )
        return rows


def _extraction(rng: random.Random) -> tuple[str, str]:
    order = str(rng.randint(10000, 99999))
    product = rng.choice(PRODUCTS)
    issue = rng.choice(list(ISSUES))
    urgent = rng.random() < 0.4
    phrase = rng.choice(ISSUES[issue])
    tail = rng.choice(URGENCY[urgent])
    if issue == "refund" and phrase.startswith("I want"):
        body = f"{phrase} the {product} from order #{order}"
    else:
        body = f"the {product} from order #{order} {phrase}"
    message = " ".join(part for part in (rng.choice(OPENERS), body, tail) if part).strip()
    ticket = {"order_id": order, "product": product, "issue": issue, "urgent": urgent}
    return message, json.dumps(ticket, separators=(",", ":"))


def _classification(rng: random.Random) -> tuple[str, str]:
    label = rng.choice(list(LABELS))
    text = rng.choice(LABELS[label])
    name = rng.choice(FIRST_NAMES)
    message = " ".join(p for p in (rng.choice(OPENERS), f"{text}.", f"Thanks, {name}") if p)
    return message, label


def _rewrite(rng: random.Random) -> tuple[str, str]:
    name = rng.choice(FIRST_NAMES)
    other = rng.choice([n for n in FIRST_NAMES if n != name])
    email = f"{name.lower()}.{rng.randint(1, 99)}@{rng.choice(DOMAINS)}"
    product = rng.choice(PRODUCTS)
    templates = [
        "{name} asked {other} to send the {product} to {email}.",
        "Please tell {name} that the {product} is ready; reply to {email}.",
        "{other} and {name} share the account {email} for the {product}.",
    ]
    template = rng.choice(templates)
    sentence = template.format(name=name, other=other, email=email, product=product)
    redacted = template.format(name="[NAME]", other="[NAME]", email="[EMAIL]", product=product)
    return sentence, redacted


TASKS = (
    Task(
        "extraction",
        "Turn the support message into a JSON ticket with order_id, product, issue "
        "(damaged, missing, refund or wrong_item) and urgent.",
        _extraction,
    ),
    Task(
        "classification",
        "Label the message: billing, shipping, account or technical.",
        _classification,
    ),
    Task(
        "rewrite",
        "Repeat the sentence with every person's name replaced by [NAME] and every email "
        "address by [EMAIL].",
        _rewrite,
    ),
)

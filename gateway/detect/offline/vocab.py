"""Word banks for the traffic simulator.

Every bank is split in two disjoint families by position: even entries feed the training split's
generators, odd entries the held-out split's, so held-out traffic shares no topic, product or
phrasing with what the model was trained on (see :mod:`gateway.detect.offline.simulate`).
"""

from __future__ import annotations

from typing import Final

TOPICS: Final = (
    "photosynthesis", "compound interest", "the French revolution", "quantum entanglement",
    "binary search", "supply and demand", "plate tectonics", "the immune system",
    "neural networks", "climate feedback loops", "the Roman empire", "blockchain consensus",
    "protein folding", "game theory", "black holes", "the water cycle", "machine translation",
    "graph coloring", "inflation", "vaccination", "the printing press", "ocean currents",
    "public key cryptography", "natural selection", "the stock market", "volcanic eruptions",
    "linear regression", "the Cold War", "operating system schedulers", "the human genome",
    "renewable energy grids", "microeconomics", "special relativity", "cloud computing",
    "the Renaissance", "antibiotic resistance", "urban planning", "dark matter",
    "language acquisition", "sorting algorithms", "the Silk Road", "nuclear fusion",
    "probability theory", "the industrial revolution", "coral reefs", "database indexing",
    "behavioral economics", "the nervous system", "ancient Egypt", "prime numbers",
    "wind turbines", "social networks", "glaciers", "compilers", "the Byzantine empire",
    "sleep cycles", "carbon capture", "trade tariffs", "the Big Bang", "recursion",
    "enzyme kinetics", "monetary policy", "the Ottoman empire", "hash tables", "tidal energy",
    "epigenetics", "fluid dynamics", "the Meiji restoration", "distributed consensus",
    "cognitive biases", "rainforest ecology", "Fourier transforms",
)
EVERYDAY: Final = (
    "my sister's birthday", "a weekend trip to Lisbon", "my sourdough starter",
    "a job interview on Monday", "my cat who keeps scratching the sofa", "a monthly budget",
    "learning the guitar", "a wedding toast", "a cover letter", "my tomato plants",
    "a half marathon plan", "moving to a new apartment", "a dinner party for six",
    "my son's science project", "a difficult email to my landlord", "a road trip playlist",
    "a book club pick", "fixing a squeaky door", "a vegetarian lasagna", "my sleep schedule",
    "a toast for my parents' anniversary", "planning a garden shed", "a slow cooker chili",
    "choosing a laptop", "learning Spanish verbs", "a birthday poem for my grandmother",
    "an apology message to a friend", "a packing list for camping", "training a puppy",
    "a resignation letter", "a kid-friendly museum day", "repainting the kitchen",
)
LANGUAGES: Final = (
    "python", "javascript", "go", "rust", "java", "typescript", "c++", "kotlin", "ruby",
    "c#", "scala", "swift",
)
IDENTIFIERS: Final = (
    "user", "order", "cache", "parser", "token", "config", "session", "invoice", "queue",
    "buffer", "client", "payload", "record", "matrix", "node", "event", "account", "report",
    "item", "graph", "stream", "job", "metric", "shard",
)
ERRORS: Final = (
    "TypeError: 'NoneType' object is not subscriptable", "segmentation fault (core dumped)",
    "NullPointerException at line 42", "index out of range [3] with length 3",
    "deadlock detected", "connection timed out after 30000 ms",
    "KeyError: 'id'", "borrowed value does not live long enough",
    "undefined is not a function", "ConcurrentModificationException",
    "maximum recursion depth exceeded", "cannot find symbol",
)
PRODUCTS: Final = (
    "the Acme X2 router", "Nimbus cloud drive", "the Orbit fitness band", "PixelPrint 300",
    "the Lumen smart bulb", "Harbor checking account", "the Quill note app",
    "the Vega e-bike", "Summit hiking boots", "the Beacon home alarm",
    "Cobalt web hosting", "the Ember coffee grinder",
)
ISSUES: Final = (
    "I was charged twice this month", "my password reset link expired",
    "the device will not turn on", "my order arrived damaged", "I want to cancel my plan",
    "the app crashes when I open settings", "I cannot log in from my new phone",
    "the delivery is a week late", "how do I change my billing address",
    "the firmware update failed", "I need an invoice for my company",
    "the battery drains overnight",
)
SUBJECTS: Final = (
    "high school algebra", "world history", "clinical medicine", "professional law",
    "college chemistry", "moral philosophy", "computer security", "astronomy",
    "macroeconomics", "nutrition", "electrical engineering", "virology", "sociology",
    "formal logic", "marketing", "anatomy",
)
ADJECTIVES: Final = (
    "concise", "detailed", "friendly", "formal", "simple", "thorough", "playful", "neutral",
    "persuasive", "technical", "gentle", "direct",
)
DOCUMENT_KINDS: Final = (
    "meeting transcript", "support ticket thread", "news article", "quarterly report",
    "research abstract", "incident postmortem", "legal memo", "product review",
    "patient note", "sales call summary",
)
FILLER: Final = (
    "the team agreed to revisit the timeline", "several customers reported delays",
    "revenue grew in the northern region", "the committee postponed the decision",
    "results were consistent with earlier studies", "the outage lasted forty minutes",
    "costs rose faster than expected", "the pilot program will expand next quarter",
    "feedback on the new design was mixed", "the contract renewal is pending review",
    "staffing remains the main constraint", "the vendor confirmed the shipment",
    "a follow-up meeting was scheduled", "the sample size was small",
    "the migration finished ahead of schedule", "two risks were escalated",
)


def family(bank: tuple[str, ...], split: str) -> tuple[str, ...]:
    """The half of ``bank`` that ``split`` ("train" or "heldout") may use."""
    return bank[0::2] if split == "train" else bank[1::2]

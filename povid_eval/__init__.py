"""povid-eval: POVID-style preference tuning of vision-language models and faithful hallucination benchmarks."""

__version__ = "0.1.0"

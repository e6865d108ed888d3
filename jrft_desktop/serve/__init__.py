"""`jrft serve`: an OpenAI-compatible local server where every request names its own vector and requests for many
vectors of one base model share batches. It builds on the core (which never imports it): `bank` holds the base
model and the vectors with their precomputed per-layer shifts, `batching` runs every forward pass in one thread
(continuous batching for generation, `decoding`), `app` and its route modules speak HTTP, `server` starts it."""

API_KEY_VARIABLE = "JRFT_API_KEY"  # the environment variable `jrft serve` reads its API key from (here: no imports)

"""Per-key rate limits and quotas, in this process or shared through Redis."""

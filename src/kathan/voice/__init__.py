"""Voice-agent mode: persona prompts, and a speech shaper that turns any
backend's text deltas into speakable pieces for a TTS engine."""

"""Other toolkits' formats, one module per foreign format: CTranslate2 (export, and translating with the export),
Hugging Face model directories and MarianMT / OPUS-MT models (import)."""

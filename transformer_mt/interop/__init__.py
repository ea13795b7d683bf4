"""Other toolkits' formats: one module per foreign format (CTranslate2 export and translation)."""

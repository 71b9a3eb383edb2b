"""The framework-free core every domain builds on: who acts (context), what can go wrong
(errors), time (clock), units and money, and the shared schema bases."""

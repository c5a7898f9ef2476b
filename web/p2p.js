// The protocol library for the page (filled in by the browser issue).

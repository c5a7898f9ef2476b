// The page's application logic (filled in by the browser issue).

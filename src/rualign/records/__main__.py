"""python -m rualign.records [docs/formats.md]: print the record tables, or refresh them in the file."""

import sys

from rualign.records.docs import docs_markdown, refresh_docs

if len(sys.argv) > 1:
    refresh_docs(sys.argv[1])
else:
    print(docs_markdown())

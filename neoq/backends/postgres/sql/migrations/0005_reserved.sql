-- neoq schema, version 5: reserved for the outcomes work (results and tracebacks), which lands
-- beside flow control; this placeholder keeps the numbering without gaps until it does.
SELECT 1;

"""The query layer: operators, joins, the compiler, the storage's query object and the front-end builder."""

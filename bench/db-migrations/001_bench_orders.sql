-- The benchmarked lookup table, the same on SQLite and PostgreSQL.
CREATE TABLE IF NOT EXISTS bench_orders (id INTEGER PRIMARY KEY, sku TEXT NOT NULL, quantity INTEGER NOT NULL);
INSERT INTO bench_orders (id, sku, quantity) VALUES (42, 'A-42', 3) ON CONFLICT (id) DO NOTHING;

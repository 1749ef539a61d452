-- A store written by libbudget's SQLite schema version 3 (main at 3c1ca02, before the ledger carried
-- after-images), for tests/unit/test_sqlite_migration.cpp: the limits of options_for(), r-commit (0.6
-- held, 0.5 committed), r-release, r-record (bob 0.3), r-grant (acme +5), r-deny, and r-held (alice, 1.0
-- held, TTL 2 h, 0.2 consumed inside the hold). Generated with that version, then 'sqlite3 file .dump'.
PRAGMA foreign_keys=OFF;
BEGIN TRANSACTION;
CREATE TABLE meta (key TEXT PRIMARY KEY, value) WITHOUT ROWID;
INSERT INTO meta VALUES('limits_version',4);
CREATE TABLE limits (  key TEXT PRIMARY KEY, scope TEXT NOT NULL, win TEXT NOT NULL, metric TEXT NOT NULL,  amount INTEGER NOT NULL, alerts TEXT NOT NULL) WITHOUT ROWID;
INSERT INTO limits VALUES('tenant:acme|cost|rolling:1h','tenant:acme','rolling:1h','cost',50000000000,'[]');
INSERT INTO limits VALUES('tenant:acme|cost|total','tenant:acme','total','cost',100000000000,'[]');
INSERT INTO limits VALUES('user:*|cost|day','user:*','day','cost',2000000000,'[]');
CREATE TABLE series (id INTEGER PRIMARY KEY, name TEXT NOT NULL UNIQUE);
INSERT INTO series VALUES(1,'tenant:acme|rolling:1h');
INSERT INTO series VALUES(2,'tenant:acme|total');
INSERT INTO series VALUES(3,'user:alice|day');
INSERT INTO series VALUES(4,'user:bob|day');
CREATE TABLE counters (  sid INTEGER NOT NULL, start INTEGER NOT NULL, end_ms INTEGER NOT NULL,  spent_cost INTEGER NOT NULL DEFAULT 0, spent_tokens INTEGER NOT NULL DEFAULT 0,  spent_requests INTEGER NOT NULL DEFAULT 0, held_cost INTEGER NOT NULL DEFAULT 0,  held_tokens INTEGER NOT NULL DEFAULT 0, held_requests INTEGER NOT NULL DEFAULT 0,  granted_cost INTEGER NOT NULL DEFAULT 0, granted_tokens INTEGER NOT NULL DEFAULT 0,  granted_requests INTEGER NOT NULL DEFAULT 0, PRIMARY KEY (sid, start)) WITHOUT ROWID;
INSERT INTO counters VALUES(1,1773144000000,1773144060000,800000000,0,2,1000000000,0,1,0,0,0);
INSERT INTO counters VALUES(2,0,9223372036854775807,800000000,0,2,1000000000,0,1,5000000000,0,0);
INSERT INTO counters VALUES(3,1773100800000,1773187200000,500000000,0,1,1000000000,0,1,0,0,0);
INSERT INTO counters VALUES(4,1773100800000,1773187200000,300000000,0,1,0,0,0,0,0,0);
CREATE TABLE plans (id INTEGER PRIMARY KEY, text TEXT NOT NULL UNIQUE, windows TEXT NOT NULL);
INSERT INTO plans VALUES(1,'{"c":[[0,0,50000000000,false,1773144060000,"tenant:acme|cost|rolling:1h",[]],[1,0,100000000000,true,0,"tenant:acme|cost|total",[]],[2,0,2000000000,false,1773187200000,"user:alice|cost|day",[]]],"v":4,"w":[["tenant:acme","rolling:1h",1773144000000,1773144060000,1773140460000],["tenant:acme","total",0,9223372036854775807,0],["user:alice","day",1773100800000,1773187200000,1773100800000]]}','["tenant:acme|rolling:1h|1773144000000","tenant:acme|total|0","user:alice|day|1773100800000"]');
INSERT INTO plans VALUES(2,'{"c":[[0,0,50000000000,false,1773144060000,"tenant:acme|cost|rolling:1h",[]],[1,0,100000000000,true,0,"tenant:acme|cost|total",[]],[2,0,2000000000,false,1773187200000,"user:bob|cost|day",[]]],"v":4,"w":[["tenant:acme","rolling:1h",1773144000000,1773144060000,1773140460000],["tenant:acme","total",0,9223372036854775807,0],["user:bob","day",1773100800000,1773187200000,1773100800000]]}','["tenant:acme|rolling:1h|1773144000000","tenant:acme|total|0","user:bob|day|1773100800000"]');
INSERT INTO plans VALUES(3,'{"c":[],"v":4,"w":[["tenant:acme","total",0,9223372036854775807,0]]}','["tenant:acme|total|0"]');
CREATE TABLE requests (id TEXT PRIMARY KEY, state INTEGER NOT NULL, subject TEXT NOT NULL, plan INTEGER, held_cost INTEGER, held_tokens INTEGER, held_requests INTEGER, consumed_cost INTEGER, consumed_tokens INTEGER, consumed_requests INTEGER, charged_cost INTEGER, charged_tokens INTEGER, charged_requests INTEGER, created_at INTEGER, expires_at INTEGER, flags INTEGER, model TEXT, provider TEXT, price_version TEXT, fingerprint TEXT, failing_check INTEGER, fail_spent INTEGER, fail_held INTEGER, fail_granted INTEGER) WITHOUT ROWID;
INSERT INTO requests VALUES('r-commit',1,'["global","tenant:acme","user:alice"]',1,600000000,0,1,0,0,0,500000000,0,1,1773144000000,1773144600000,0,'','','','869ea4f44040f78',-1,0,0,0);
INSERT INTO requests VALUES('r-deny',4,'["global","tenant:acme","user:bob"]',2,0,0,0,0,0,0,0,0,0,1773144000000,1773144600000,0,'','','','f98355d784e95a4',2,300000000,0,0);
INSERT INTO requests VALUES('r-grant',6,'["tenant:acme"]',3,0,0,0,0,0,0,0,0,0,1773144000000,0,0,'','','','05818754c57ed17',-1,0,0,0);
INSERT INTO requests VALUES('r-record',5,'["global","tenant:acme","user:bob"]',2,0,0,0,0,0,0,300000000,0,1,1773144000000,0,0,'','','','51d03f2a23d856a',-1,0,0,0);
INSERT INTO requests VALUES('r-release',2,'["global","tenant:acme","user:bob"]',2,400000000,0,1,0,0,0,0,0,0,1773144000000,1773144600000,0,'','','','077e093c719cea6',-1,0,0,0);
CREATE TABLE holds (id TEXT PRIMARY KEY, state INTEGER NOT NULL, subject TEXT NOT NULL, plan INTEGER, held_cost INTEGER, held_tokens INTEGER, held_requests INTEGER, consumed_cost INTEGER, consumed_tokens INTEGER, consumed_requests INTEGER, charged_cost INTEGER, charged_tokens INTEGER, charged_requests INTEGER, created_at INTEGER, expires_at INTEGER, flags INTEGER, model TEXT, provider TEXT, price_version TEXT, fingerprint TEXT, failing_check INTEGER, fail_spent INTEGER, fail_held INTEGER, fail_granted INTEGER) WITHOUT ROWID;
INSERT INTO holds VALUES('r-held',0,'["global","tenant:acme","user:alice"]',1,1000000000,0,1,0,0,0,0,0,0,1773144000000,1773151200000,0,'','','','8056c3208a0a592',-1,0,0,0);
CREATE TABLE ledger (seq INTEGER PRIMARY KEY, body TEXT NOT NULL, hash NOT NULL, plan INTEGER, wpos INTEGER);
INSERT INTO ledger VALUES(1,'{"time":1773144000000,"type":"reserve","request_id":"r-commit","subject":["global","tenant:acme","user:alice"],"spent":[0,0,0],"held":[600000000,0,1],"granted":[0,0,0]}',X'beb482239364bf23545f57d07723fa6e3e5cb6a4f1b1a250aa6d8562599cec7c',1,167);
INSERT INTO ledger VALUES(2,'{"time":1773144000000,"type":"commit","request_id":"r-commit","subject":["global","tenant:acme","user:alice"],"spent":[500000000,0,1],"held":[-600000000,0,-1],"granted":[0,0,0]}',X'104234273e4ec272ceb5d3e0b927908b2f06e370bb6038120e7b17b06a6e69fb',1,176);
INSERT INTO ledger VALUES(3,'{"time":1773144000000,"type":"reserve","request_id":"r-release","subject":["global","tenant:acme","user:bob"],"spent":[0,0,0],"held":[400000000,0,1],"granted":[0,0,0]}',X'38f8c9d9e68e75c424994e607025256ea3efec7b77578ad3e5966dea42d1b0ba',2,166);
INSERT INTO ledger VALUES(4,'{"time":1773144000000,"type":"release","request_id":"r-release","subject":["global","tenant:acme","user:bob"],"spent":[0,0,0],"held":[-400000000,0,-1],"granted":[0,0,0]}',X'504f0ae430bae01ee382e93b1000640fc77ee5ac420c18faa23f87c5f18918ac',2,168);
INSERT INTO ledger VALUES(5,'{"time":1773144000000,"type":"record","request_id":"r-record","subject":["global","tenant:acme","user:bob"],"spent":[300000000,0,1],"held":[0,0,0],"granted":[0,0,0]}',X'7226715041383d114964ace876723d9fb4df581e5d3f1938e7f0b85ef85e98a1',2,164);
INSERT INTO ledger VALUES(6,'{"time":1773144000000,"type":"grant","request_id":"r-grant","subject":["tenant:acme"],"spent":[0,0,0],"held":[0,0,0],"granted":[5000000000,0,0],"metadata":{"reason":"top-up"}}',X'0e2cda34d7f3e01756a3400edd378f5cb2863a0204cdaa16158cb6c9ddd9c420',3,143);
INSERT INTO ledger VALUES(7,'{"time":1773144000000,"type":"deny","request_id":"r-deny","subject":["global","tenant:acme","user:bob"],"spent":[0,0,0],"held":[0,0,0],"granted":[0,0,0]}',X'f0663900c0126dc9e5d8d3b30a0af7300aa224484a7d4dfebd882c6f9642caba',2,152);
INSERT INTO ledger VALUES(8,'{"time":1773144000000,"type":"reserve","request_id":"r-held","subject":["global","tenant:acme","user:alice"],"spent":[0,0,0],"held":[1000000000,0,1],"granted":[0,0,0],"metadata":{"feature":"chat"}}',X'd10a981d879ccfb635be60b9e375fb0e343c5a3bd7931dd3fa653fdc3e896fc1',1,166);
COMMIT;

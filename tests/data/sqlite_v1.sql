-- A store written by libbudget's SQLite schema version 1 (before plans/series tables), for
-- tests/unit/test_sqlite_migration.cpp. Generated with the version-1 store: 'sqlite3 file .dump'.
PRAGMA foreign_keys=OFF;
BEGIN TRANSACTION;
CREATE TABLE meta (key TEXT PRIMARY KEY, value) WITHOUT ROWID;
INSERT INTO meta VALUES('limits_version',4);
CREATE TABLE limits (
  key TEXT PRIMARY KEY, scope TEXT NOT NULL, win TEXT NOT NULL, metric TEXT NOT NULL,
  amount INTEGER NOT NULL, alerts TEXT NOT NULL) WITHOUT ROWID;
INSERT INTO limits VALUES('tenant:acme|cost|rolling:1h','tenant:acme','rolling:1h','cost',50000000000,'[]');
INSERT INTO limits VALUES('tenant:acme|cost|total','tenant:acme','total','cost',100000000000,'[]');
INSERT INTO limits VALUES('user:*|cost|day','user:*','day','cost',2000000000,'[]');
CREATE TABLE counters (
  series TEXT NOT NULL, start INTEGER NOT NULL, end_ms INTEGER NOT NULL,
  spent_cost INTEGER NOT NULL DEFAULT 0, spent_tokens INTEGER NOT NULL DEFAULT 0, spent_requests INTEGER NOT NULL DEFAULT 0,
  held_cost INTEGER NOT NULL DEFAULT 0, held_tokens INTEGER NOT NULL DEFAULT 0, held_requests INTEGER NOT NULL DEFAULT 0,
  granted_cost INTEGER NOT NULL DEFAULT 0, granted_tokens INTEGER NOT NULL DEFAULT 0, granted_requests INTEGER NOT NULL DEFAULT 0,
  PRIMARY KEY (series, start)) WITHOUT ROWID;
INSERT INTO counters VALUES('tenant:acme|rolling:1h',1773144000000,1773144060000,800000000,0,2,1000000000,0,1,0,0,0);
INSERT INTO counters VALUES('tenant:acme|total',0,9223372036854775807,800000000,0,2,1000000000,0,1,5000000000,0,0);
INSERT INTO counters VALUES('user:alice|day',1773100800000,1773187200000,500000000,0,1,1000000000,0,1,0,0,0);
INSERT INTO counters VALUES('user:bob|day',1773100800000,1773187200000,300000000,0,1,0,0,0,0,0,0);
CREATE TABLE requests (
  id TEXT PRIMARY KEY, state INTEGER NOT NULL, subject TEXT NOT NULL, plan TEXT,
  held_cost INTEGER, held_tokens INTEGER, held_requests INTEGER,
  consumed_cost INTEGER, consumed_tokens INTEGER, consumed_requests INTEGER,
  charged_cost INTEGER, charged_tokens INTEGER, charged_requests INTEGER,
  created_at INTEGER, expires_at INTEGER, flags INTEGER, model TEXT, provider TEXT, price_version TEXT,
  fingerprint TEXT, failing_check INTEGER, fail_spent INTEGER, fail_held INTEGER, fail_granted INTEGER) WITHOUT ROWID;
INSERT INTO requests VALUES('r-commit',1,'["global","tenant:acme","user:alice"]','{"c":[[0,0,50000000000,false,1773144060000,"tenant:acme|cost|rolling:1h",[]],[1,0,100000000000,true,0,"tenant:acme|cost|total",[]],[2,0,2000000000,false,1773187200000,"user:alice|cost|day",[]]],"v":4,"w":[["tenant:acme","rolling:1h",1773144000000,1773144060000,1773140460000],["tenant:acme","total",0,9223372036854775807,0],["user:alice","day",1773100800000,1773187200000,1773100800000]]}',600000000,0,1,0,0,0,500000000,0,1,1773144000000,1773144600000,0,'','','','869ea4f44040f78',-1,0,0,0);
INSERT INTO requests VALUES('r-grant',6,'["tenant:acme"]','{"c":[],"v":4,"w":[["tenant:acme","total",0,9223372036854775807,0]]}',0,0,0,0,0,0,0,0,0,1773144000000,0,0,'','','','05818754c57ed17',-1,0,0,0);
INSERT INTO requests VALUES('r-held',0,'["global","tenant:acme","user:alice"]','{"c":[[0,0,50000000000,false,1773144060000,"tenant:acme|cost|rolling:1h",[]],[1,0,100000000000,true,0,"tenant:acme|cost|total",[]],[2,0,2000000000,false,1773187200000,"user:alice|cost|day",[]]],"v":4,"w":[["tenant:acme","rolling:1h",1773144000000,1773144060000,1773140460000],["tenant:acme","total",0,9223372036854775807,0],["user:alice","day",1773100800000,1773187200000,1773100800000]]}',1000000000,0,1,0,0,0,0,0,0,1773144000000,1773151200000,0,'','','','8056c3208a0a592',-1,0,0,0);
INSERT INTO requests VALUES('r-record',5,'["global","tenant:acme","user:bob"]','{"c":[[0,0,50000000000,false,1773144060000,"tenant:acme|cost|rolling:1h",[]],[1,0,100000000000,true,0,"tenant:acme|cost|total",[]],[2,0,2000000000,false,1773187200000,"user:bob|cost|day",[]]],"v":4,"w":[["tenant:acme","rolling:1h",1773144000000,1773144060000,1773140460000],["tenant:acme","total",0,9223372036854775807,0],["user:bob","day",1773100800000,1773187200000,1773100800000]]}',0,0,0,0,0,0,300000000,0,1,1773144000000,0,0,'','','','51d03f2a23d856a',-1,0,0,0);
INSERT INTO requests VALUES('r-release',2,'["global","tenant:acme","user:bob"]','{"c":[[0,0,50000000000,false,1773144060000,"tenant:acme|cost|rolling:1h",[]],[1,0,100000000000,true,0,"tenant:acme|cost|total",[]],[2,0,2000000000,false,1773187200000,"user:bob|cost|day",[]]],"v":4,"w":[["tenant:acme","rolling:1h",1773144000000,1773144060000,1773140460000],["tenant:acme","total",0,9223372036854775807,0],["user:bob","day",1773100800000,1773187200000,1773100800000]]}',400000000,0,1,0,0,0,0,0,0,1773144000000,1773144600000,0,'','','','077e093c719cea6',-1,0,0,0);
CREATE TABLE ledger (
  seq INTEGER PRIMARY KEY, time INTEGER NOT NULL, type TEXT NOT NULL, request_id TEXT NOT NULL,
  body TEXT NOT NULL, prev_hash TEXT NOT NULL, hash TEXT NOT NULL);
INSERT INTO ledger VALUES(1,1773144000000,'reserve','r-held','{"time":1773144000000,"type":"reserve","request_id":"r-held","subject":["global","tenant:acme","user:alice"],"spent":[0,0,0],"held":[1000000000,0,1],"granted":[0,0,0],"windows":["tenant:acme|rolling:1h|1773144000000","tenant:acme|total|0","user:alice|day|1773100800000"],"metadata":{"app":"chat"}}','0000000000000000000000000000000000000000000000000000000000000000','4889894aad3fca8dfb6d3f123fc00c88dd05dd887a54bbb05d67b4330787aaa1');
INSERT INTO ledger VALUES(2,1773144000000,'reserve','r-commit','{"time":1773144000000,"type":"reserve","request_id":"r-commit","subject":["global","tenant:acme","user:alice"],"spent":[0,0,0],"held":[600000000,0,1],"granted":[0,0,0],"windows":["tenant:acme|rolling:1h|1773144000000","tenant:acme|total|0","user:alice|day|1773100800000"]}','4889894aad3fca8dfb6d3f123fc00c88dd05dd887a54bbb05d67b4330787aaa1','5f251faabd41c614c05b724672bb46619d879c9117b82b524d8b1363afbbc411');
INSERT INTO ledger VALUES(3,1773144000000,'commit','r-commit','{"time":1773144000000,"type":"commit","request_id":"r-commit","subject":["global","tenant:acme","user:alice"],"spent":[500000000,0,1],"held":[-600000000,0,-1],"granted":[0,0,0],"windows":["tenant:acme|rolling:1h|1773144000000","tenant:acme|total|0","user:alice|day|1773100800000"]}','5f251faabd41c614c05b724672bb46619d879c9117b82b524d8b1363afbbc411','5b903928b22963694eed917a4f38458cca98dfbb8f5f44e812178e869e2c0e3b');
INSERT INTO ledger VALUES(4,1773144000000,'reserve','r-release','{"time":1773144000000,"type":"reserve","request_id":"r-release","subject":["global","tenant:acme","user:bob"],"spent":[0,0,0],"held":[400000000,0,1],"granted":[0,0,0],"windows":["tenant:acme|rolling:1h|1773144000000","tenant:acme|total|0","user:bob|day|1773100800000"]}','5b903928b22963694eed917a4f38458cca98dfbb8f5f44e812178e869e2c0e3b','34ce35068c81fd53ec2d8d8fc0ab0626f1cca8f4693dc9ecc2135a4a290c3f03');
INSERT INTO ledger VALUES(5,1773144000000,'release','r-release','{"time":1773144000000,"type":"release","request_id":"r-release","subject":["global","tenant:acme","user:bob"],"spent":[0,0,0],"held":[-400000000,0,-1],"granted":[0,0,0],"windows":["tenant:acme|rolling:1h|1773144000000","tenant:acme|total|0","user:bob|day|1773100800000"]}','34ce35068c81fd53ec2d8d8fc0ab0626f1cca8f4693dc9ecc2135a4a290c3f03','5fae4caaed6be9da98ea0ec3ca00e3b6559ed85141aab21e7a6cfaa6a9bc4ec0');
INSERT INTO ledger VALUES(6,1773144000000,'record','r-record','{"time":1773144000000,"type":"record","request_id":"r-record","subject":["global","tenant:acme","user:bob"],"spent":[300000000,0,1],"held":[0,0,0],"granted":[0,0,0],"windows":["tenant:acme|rolling:1h|1773144000000","tenant:acme|total|0","user:bob|day|1773100800000"]}','5fae4caaed6be9da98ea0ec3ca00e3b6559ed85141aab21e7a6cfaa6a9bc4ec0','902870c05bcf984fffa1cde5023ffcf1e02fb7e97638a8356cfdca4a1339d57f');
INSERT INTO ledger VALUES(7,1773144000000,'grant','r-grant','{"time":1773144000000,"type":"grant","request_id":"r-grant","subject":["tenant:acme"],"spent":[0,0,0],"held":[0,0,0],"granted":[5000000000,0,0],"windows":["tenant:acme|total|0"],"metadata":{"reason":"bonus"}}','902870c05bcf984fffa1cde5023ffcf1e02fb7e97638a8356cfdca4a1339d57f','a83b73aaa9112a3d2aabb5fd831e14b4d2ec1e8919736052eaad9b99b7feadeb');
CREATE INDEX requests_deadline ON requests(expires_at) WHERE state = 0;
COMMIT;

/* libpq loaded with dlopen at first use: a hookd on the SQLite spool never maps it. */
#ifndef HOOKD_PQ_LAZY_H
#define HOOKD_PQ_LAZY_H

#include <libpq-fe.h>

/*
 * Linking libpq maps about twenty libraries into every hookd (Kerberos,
 * LDAP, SASL, GnuTLS, p11-kit, ...: 5 MiB of resident mappings, and the
 * start-up time to relocate them), while only the PostgreSQL spool and its
 * config check use it. The files that do include this header instead of
 * <libpq-fe.h> and call PQ* as usual: each name below is a pointer of the
 * table, which pq_lazy_error() fills on first use.
 */

/* The library asked for by name: the ABI of the libpq5 package whose headers
 * we build against (libpq-dev). */
#define PQ_LAZY_SONAME "libpq.so.5"

/* The libpq functions hookd uses, each with the type of its prototype in
 * libpq-fe.h (a mismatch is a compile error, not a wrong call). */
typedef struct pq_fns {
  __typeof__(PQclear) *clear;
  __typeof__(PQcmdTuples) *cmdTuples;
  __typeof__(PQconnectdbParams) *connectdbParams;
  __typeof__(PQconninfoFree) *conninfoFree;
  __typeof__(PQconninfoParse) *conninfoParse;
  __typeof__(PQconsumeInput) *consumeInput;
  __typeof__(PQenterPipelineMode) *enterPipelineMode;
  __typeof__(PQerrorMessage) *errorMessage;
  __typeof__(PQexec) *exec;
  __typeof__(PQexecParams) *execParams;
  __typeof__(PQexecPrepared) *execPrepared;
  __typeof__(PQexitPipelineMode) *exitPipelineMode;
  __typeof__(PQfinish) *finish;
  __typeof__(PQfreemem) *freemem;
  __typeof__(PQgetResult) *getResult;
  __typeof__(PQgetisnull) *getisnull;
  __typeof__(PQgetlength) *getlength;
  __typeof__(PQgetvalue) *getvalue;
  __typeof__(PQnotifies) *notifies;
  __typeof__(PQntuples) *ntuples;
  __typeof__(PQpipelineSync) *pipelineSync;
  __typeof__(PQprepare) *prepare;
  __typeof__(PQresultErrorField) *resultErrorField;
  __typeof__(PQresultErrorMessage) *resultErrorMessage;
  __typeof__(PQresultStatus) *resultStatus;
  __typeof__(PQsendQueryPrepared) *sendQueryPrepared;
  __typeof__(PQsetNoticeProcessor) *setNoticeProcessor;
  __typeof__(PQsocket) *socket;
  __typeof__(PQstatus) *status;
  __typeof__(PQunescapeBytea) *unescapeBytea;
} pq_fns;

extern pq_fns pq_lazy_fns;

/* Loads libpq on the first call (once per process, any thread). NULL when
 * it is loaded; else why not ("cannot load libpq.so.5: ..."), the same text
 * on every later call. Call it before any other PQ* function. */
const char *pq_lazy_error(void);

#ifndef PQ_LAZY_NO_MACROS
#define PQclear (pq_lazy_fns.clear)
#define PQcmdTuples (pq_lazy_fns.cmdTuples)
#define PQconnectdbParams (pq_lazy_fns.connectdbParams)
#define PQconninfoFree (pq_lazy_fns.conninfoFree)
#define PQconninfoParse (pq_lazy_fns.conninfoParse)
#define PQconsumeInput (pq_lazy_fns.consumeInput)
#define PQenterPipelineMode (pq_lazy_fns.enterPipelineMode)
#define PQerrorMessage (pq_lazy_fns.errorMessage)
#define PQexec (pq_lazy_fns.exec)
#define PQexecParams (pq_lazy_fns.execParams)
#define PQexecPrepared (pq_lazy_fns.execPrepared)
#define PQexitPipelineMode (pq_lazy_fns.exitPipelineMode)
#define PQfinish (pq_lazy_fns.finish)
#define PQfreemem (pq_lazy_fns.freemem)
#define PQgetResult (pq_lazy_fns.getResult)
#define PQgetisnull (pq_lazy_fns.getisnull)
#define PQgetlength (pq_lazy_fns.getlength)
#define PQgetvalue (pq_lazy_fns.getvalue)
#define PQnotifies (pq_lazy_fns.notifies)
#define PQntuples (pq_lazy_fns.ntuples)
#define PQpipelineSync (pq_lazy_fns.pipelineSync)
#define PQprepare (pq_lazy_fns.prepare)
#define PQresultErrorField (pq_lazy_fns.resultErrorField)
#define PQresultErrorMessage (pq_lazy_fns.resultErrorMessage)
#define PQresultStatus (pq_lazy_fns.resultStatus)
#define PQsendQueryPrepared (pq_lazy_fns.sendQueryPrepared)
#define PQsetNoticeProcessor (pq_lazy_fns.setNoticeProcessor)
#define PQsocket (pq_lazy_fns.socket)
#define PQstatus (pq_lazy_fns.status)
#define PQunescapeBytea (pq_lazy_fns.unescapeBytea)
#endif

#endif

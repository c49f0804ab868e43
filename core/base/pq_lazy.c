/* libpq loaded with dlopen at first use: a hookd on the SQLite spool never maps it. */
#define PQ_LAZY_NO_MACROS
#include "pq_lazy.h"

#include <pthread.h>
#include <stddef.h>

#include "dynlib.h"

pq_fns pq_lazy_fns;

static pthread_once_t once = PTHREAD_ONCE_INIT;
static char load_error[384];
static int failed;

static const dynlib_sym syms[] = {
    {"PQclear", offsetof(pq_fns, clear)},
    {"PQcmdTuples", offsetof(pq_fns, cmdTuples)},
    {"PQconnectdbParams", offsetof(pq_fns, connectdbParams)},
    {"PQconninfoFree", offsetof(pq_fns, conninfoFree)},
    {"PQconninfoParse", offsetof(pq_fns, conninfoParse)},
    {"PQconsumeInput", offsetof(pq_fns, consumeInput)},
    {"PQenterPipelineMode", offsetof(pq_fns, enterPipelineMode)},
    {"PQerrorMessage", offsetof(pq_fns, errorMessage)},
    {"PQexec", offsetof(pq_fns, exec)},
    {"PQexecParams", offsetof(pq_fns, execParams)},
    {"PQexecPrepared", offsetof(pq_fns, execPrepared)},
    {"PQexitPipelineMode", offsetof(pq_fns, exitPipelineMode)},
    {"PQfinish", offsetof(pq_fns, finish)},
    {"PQfreemem", offsetof(pq_fns, freemem)},
    {"PQgetResult", offsetof(pq_fns, getResult)},
    {"PQgetisnull", offsetof(pq_fns, getisnull)},
    {"PQgetlength", offsetof(pq_fns, getlength)},
    {"PQgetvalue", offsetof(pq_fns, getvalue)},
    {"PQnotifies", offsetof(pq_fns, notifies)},
    {"PQntuples", offsetof(pq_fns, ntuples)},
    {"PQpipelineSync", offsetof(pq_fns, pipelineSync)},
    {"PQprepare", offsetof(pq_fns, prepare)},
    {"PQresultErrorField", offsetof(pq_fns, resultErrorField)},
    {"PQresultErrorMessage", offsetof(pq_fns, resultErrorMessage)},
    {"PQresultStatus", offsetof(pq_fns, resultStatus)},
    {"PQsendQueryPrepared", offsetof(pq_fns, sendQueryPrepared)},
    {"PQsetNoticeProcessor", offsetof(pq_fns, setNoticeProcessor)},
    {"PQsocket", offsetof(pq_fns, socket)},
    {"PQstatus", offsetof(pq_fns, status)},
    {"PQunescapeBytea", offsetof(pq_fns, unescapeBytea)},
};
/* Every member of pq_fns is filled from syms. */
_Static_assert(sizeof syms / sizeof syms[0] == sizeof(pq_fns) / sizeof(void (*)(void)),
               "pq_fns and syms disagree");

static void load(void) {
  failed = dynlib_load(PQ_LAZY_SONAME, syms, sizeof syms / sizeof syms[0], &pq_lazy_fns, load_error,
                       sizeof load_error) != 0;
}

const char *pq_lazy_error(void) {
  pthread_once(&once, load);
  return failed ? load_error : NULL;
}

/*
 * wk_priority: the priority classes of a request. The engine's API (engine.h) takes one per
 * request; the scheduler (scheduler.h) orders its waiting queue by them, interactive first.
 * Its own header so that the scheduler needs nothing of the engine.
 */
#ifndef WK_PRIORITY_H
#define WK_PRIORITY_H

typedef enum wk_priority {
    WK_PRIORITY_INTERACTIVE = 0,
    WK_PRIORITY_BATCH = 1,
} wk_priority;

#endif /* WK_PRIORITY_H */

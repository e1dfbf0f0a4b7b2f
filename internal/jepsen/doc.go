// Package jepsen tests a real difuse cluster the way Jepsen does: it runs
// difused processes in network namespaces of their own, has clients
// operate on registers concurrently while a nemesis kills, pauses and
// partitions nodes on a random schedule from a seed, then heals the
// cluster and checks the history: every key's operations must be
// linearizable (porcupine) and no acknowledged write may be lost.
package jepsen

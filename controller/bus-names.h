/* The names of org.autoballoon1 on the bus, for the daemon and autoballoonctl alike
 * (dbus/org.autoballoon1.*.xml describes what is behind them). */
#pragma once

#define BUS_NAME                  "org.autoballoon1"
#define BUS_PATH                  "/org/autoballoon1"
#define BUS_MACHINE_PREFIX        "/org/autoballoon1/machine"
#define BUS_MANAGER_IFACE         "org.autoballoon1.Manager"
#define BUS_MACHINE_IFACE         "org.autoballoon1.Machine"
#define BUS_ERROR_NO_SUCH_MACHINE "org.autoballoon1.Error.NoSuchMachine"
#define BUS_ERROR_NO_BALLOON      "org.autoballoon1.Error.NoBalloon"
